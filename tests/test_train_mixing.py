"""MixUp / CutMix / ShuffleMix+ in the training step (train/mixing.py) against the journal's utils/mixup.py.

The original's `Mixup` ('batch' mode) runs under torch on a float64 clip batch while its numpy
and `random` draws are recorded; the same draws go through our `decide`, and the mixed clips and
the mixed targets' loss (and its gradient, which is softmax - target: the targets themselves) are
compared. Then the jitted training step with mixing: it runs, it changes the loss, and the JAX RNG
makes it reproducible and different from step to step.
"""

import functools
import importlib
import pathlib
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import load_config_file, make_tiny_config
from rgbd_jax import parallel
from rgbd_jax.data import pipeline
from rgbd_jax.models import build
from rgbd_jax.train import mixing
from rgbd_jax.train import optim
from rgbd_jax.train import state as state_lib
from rgbd_jax.train import steps

MIRROR = pathlib.Path('/work/.mirror/zhoubenjia+MotionRGBD-PAMI/repo')
B, C, T, H, W, K = 4, 3, 8, 6, 5, 7   # H != W: a transposed box would show


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope='module')
def journal_mixup(tmp_path_factory):
  """The journal's utils/mixup.py (with its utils/shufflemix.py), read from its repository."""
  if not MIRROR.is_dir():
    pytest.skip(f'the journal original (zhoubenjia/MotionRGBD-PAMI) is not at {MIRROR}')
  root = tmp_path_factory.mktemp('journal')
  package = root / 'journal_utils'
  package.mkdir()
  (package / '__init__.py').write_text('')
  for name in ('mixup.py', 'shufflemix.py'):
    text = subprocess.run(['git', '-C', str(MIRROR), 'show', f'HEAD:utils/{name}'], check=True,
                          capture_output=True, text=True).stdout
    (package / name).write_text(text)
  sys.path.insert(0, str(root))
  try:
    yield importlib.import_module('journal_utils.mixup')
  finally:
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith('journal_utils')]:
      del sys.modules[name]


def _config(**common):
  config = load_config_file('configs/umdr_ntu.py')
  config.model.num_classes = K
  config.common.update(common)
  return config


def _record(monkeypatch):
  """Records every numpy / random draw the original makes, in order: [(name, args, value)]."""
  calls = []

  def recorder(name, fn):
    def wrapped(*args, **kwargs):
      value = fn(*args, **kwargs)
      calls.append((name, args, value))
      return value
    return wrapped
  monkeypatch.setattr(np.random, 'rand', recorder('rand', np.random.rand))
  monkeypatch.setattr(np.random, 'beta', recorder('beta', np.random.beta))
  monkeypatch.setattr(np.random, 'randint', recorder('randint', np.random.randint))
  monkeypatch.setattr(random, 'sample', recorder('sample', random.sample))
  return calls


def _our_draw(config, calls, order_rng) -> mixing.Draw:
  """The original's recorded draws as our Draw; the variates it did not draw get values that
  would change the outcome if `decide` read them."""
  c = config.common
  rands = [v for name, _, v in calls if name == 'rand']
  betas = {args[0]: v for name, args, v in calls if name == 'beta'}   # keyed by alpha (distinct here)
  ints = [v for name, _, v in calls if name == 'randint']
  samples = [v for name, _, v in calls if name == 'sample']
  both = c.mixup > 0 and mixing._cutmix_alpha(config) > 0
  first_beta = next((i for i, (name, _, _) in enumerate(calls) if name == 'beta'), len(calls))
  before = [v for name, _, v in calls[:first_beta] if name == 'rand']
  after = [v for name, _, v in calls[first_beta:] if name == 'rand']
  assert len(before) == (2 if both else 1) and len(after) <= 1 and len(rands) == len(before) + len(after)
  cut_alpha = mixing._cutmix_alpha(config)
  replaced = list(samples[0]) if samples else []
  rest = [t for t in range(T) if t not in replaced]
  order_rng.shuffle(rest)
  minmax = bool(tuple(c.cutmix_minmax))
  return mixing.Draw(
      u_apply=jnp.asarray(before[0]), u_switch=jnp.asarray(before[1] if both else 0.0),
      lam_mixup=jnp.asarray(betas.get(c.mixup, 0.5)), lam_cutmix=jnp.asarray(betas.get(cut_alpha, 0.5)),
      u_shufflemix=jnp.asarray(after[0] if after else 0.0),
      lam_shufflemix=jnp.asarray(betas.get(c.shufflemix, 0.5)),
      frame_order=jnp.asarray(replaced + rest),
      cut_centre=jnp.asarray(ints[:2] if ints and not minmax else [H // 2, W // 2]),
      cut_size=jnp.asarray(ints[:2] if ints and minmax else [1, 1]),
      cut_corner=jnp.asarray(ints[2:4] if ints and minmax else [0, 0]))


def _losses_and_target_grads(config, logits, labels, lam):
  """Ours: the DSNV2 objective on the mixed targets, and its gradient w.r.t. the merged logits."""
  kind = build.network(config)

  def total(merged):
    out = dict(logits, logits=merged)
    loss_fn = lambda y: kind.losses(config, out, y, 0.2)
    return mixing.mixed_losses(loss_fn, labels, lam)['total']
  return jax.value_and_grad(total)(logits['logits'])


def _original_loss_and_grad(config, logits, target):
  """The journal's train.py objective with SoftTargetCrossEntropy on Mixup's targets."""
  soft_ce = lambda z, t: torch.sum(-t * torch.log_softmax(z, dim=-1), dim=-1).mean()
  z = {k: torch.tensor(np.asarray(v), requires_grad=(k == 'logits')) for k, v in logits.items()}
  lamdb = [float(w) for w in config.common.loss_lamdb]
  loss = sum(w * soft_ce(z[k], target) for w, k in zip(lamdb, ('logits', 'xs', 'xm', 'xl')))
  loss = loss + 0.2 * z['distillation_loss']
  loss.backward()
  return float(loss.detach()), z['logits'].grad.numpy()


CASES = {
    # MixUp or ShuffleMix (smprob), some batches not mixed (mixup_prob)
    'shufflemix+': dict(mixup=0.8, shufflemix=0.3, smprob=0.5, mixup_prob=0.7),
    'cutmix': dict(mixup=0.0, cutmix=1.0, mixup_prob=0.8),
    'mixup+cutmix': dict(mixup=0.8, cutmix=1.5, shufflemix=0.3, smprob=0.5, mixup_switch_prob=0.5),
    'minmax': dict(mixup=0.8, cutmix_minmax=(0.2, 0.8), shufflemix=0.3, smprob=0.4, mixup_switch_prob=0.5),
}
MODES = {'shufflemix+': {mixing.NONE, mixing.MIXUP, mixing.SHUFFLEMIX}, 'cutmix': {mixing.NONE, mixing.CUTMIX},
         'mixup+cutmix': {mixing.MIXUP, mixing.SHUFFLEMIX, mixing.CUTMIX},
         'minmax': {mixing.MIXUP, mixing.SHUFFLEMIX, mixing.CUTMIX}}


@pytest.mark.parametrize('case', sorted(CASES))
def test_mixed_clips_and_targets_equal_the_journal_mixup(journal_mixup, monkeypatch, case):
  config = _config(**CASES[case])
  assert mixing.enabled(config)
  c = config.common
  args = type('Args', (), dict(epochs=100, epoch=3, mixup_dynamic=False, MixIntra=False, tempMix=False,
                               smprob=c.smprob, shufflemix=c.shufflemix, smixmode=c.smixmode))()
  original = journal_mixup.Mixup(
      mixup_alpha=c.mixup, cutmix_alpha=c.cutmix, cutmix_minmax=list(c.cutmix_minmax) or None,
      prob=c.mixup_prob, switch_prob=c.mixup_switch_prob, mode=c.mixup_mode,
      label_smoothing=c.label_smoothing, num_classes=K, args=args)
  data = np.random.default_rng(0)
  order_rng = random.Random(1)
  modes, changed = set(), set()
  for seed in range(16):
    x = data.normal(size=(B, C, T, H, W))
    labels = data.permutation(K)[:B]
    np.random.seed(seed)
    random.seed(seed)
    calls = _record(monkeypatch)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its one-hot targets in float64 too (torch.full's default dtype)
    try:
      mixed, target = original(torch.tensor(x), torch.tensor(labels))
    finally:
      torch.set_default_dtype(default)
      monkeypatch.undo()
    assert target.dtype == torch.float64
    draw = _our_draw(config, calls, order_rng)
    mix = mixing.decide(config, draw, T, H, W)
    modes.add(int(mix.mode))
    ours = mixing.blend(jnp.asarray(x.transpose(0, 2, 3, 4, 1)), mix)
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 4, 1, 2, 3), mixed.numpy(), rtol=1e-15, atol=1e-15,
                               err_msg=f'{case} seed {seed} mode {int(mix.mode)}')
    logits = {k: data.normal(size=(B, K)) for k in ('logits', 'xs', 'xm', 'xl')}
    logits['distillation_loss'] = np.float64(data.uniform())
    loss, grad = _losses_and_target_grads(config, {k: jnp.asarray(v) for k, v in logits.items()},
                                          jnp.asarray(labels), mix.lam)
    want_loss, want_grad = _original_loss_and_grad(config, logits, target)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-13, err_msg=f'{case} seed {seed}')
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-12, atol=1e-15, err_msg=f'{case} seed {seed}')
    if not np.allclose(mixed.numpy(), x):   # (a CutMix box or a ShuffleMix count can round to nothing)
      changed.add(int(mix.mode))
  assert modes >= MODES[case] and changed >= MODES[case] - {mixing.NONE}, (case, modes, changed)


# ------------------------------------------------------------ the rules, by reading (no original needed)

def _draw(**kw):
  base = dict(u_apply=0.0, u_switch=0.9, lam_mixup=0.7, lam_cutmix=0.64, u_shufflemix=0.9, lam_shufflemix=0.3,
              frame_order=np.array([5, 2, 7, 0, 1, 3, 4, 6]), cut_centre=np.array([1, 4]), cut_size=np.zeros(2, int),
              cut_corner=np.zeros(2, int))
  base.update(kw)
  return mixing.Draw(**{k: jnp.asarray(v) for k, v in base.items()})


def test_the_rules_by_reading():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, T, H, W, C)))
  flipped = x[::-1]
  config = _config(**CASES['mixup+cutmix'])
  # ShuffleMix: round((1 - 0.3) * 8) = 6 frames, the first six of the order, from the paired clip; lam stays 0.3
  mix = mixing.decide(config, _draw(u_shufflemix=0.1), T, H, W)
  assert int(mix.mode) == mixing.SHUFFLEMIX and float(mix.lam) == 0.3
  out = np.asarray(mixing.blend(x, mix))
  for t in range(T):
    np.testing.assert_array_equal(out[:, t], (flipped if t in (5, 2, 7, 0, 1, 3) else x)[:, t])
  # MixUp
  mix = mixing.decide(config, _draw(), T, H, W)
  assert int(mix.mode) == mixing.MIXUP and float(mix.lam) == 0.7
  np.testing.assert_allclose(mixing.blend(x, mix), 0.7 * x + (1 - 0.7) * flipped, rtol=1e-15, atol=1e-15)
  # CutMix: side int(6 * 0.6) = 3, int(5 * 0.6) = 3 about (1, 4): rows 0..1, columns 3..4; lam 1 - 4 / 30
  mix = mixing.decide(config, _draw(u_switch=0.1), T, H, W)
  assert int(mix.mode) == mixing.CUTMIX and list(np.asarray(mix.box)) == [0, 2, 3, 5]
  assert float(mix.lam) == pytest.approx(1 - 4 / 30, rel=1e-15)
  out = np.asarray(mixing.blend(x, mix))
  np.testing.assert_array_equal(out[:, :, :2, 3:], flipped[:, :, :2, 3:])
  np.testing.assert_array_equal(out[:, :, 2:], x[:, :, 2:])
  np.testing.assert_array_equal(out[:, :, :, :3], x[:, :, :, :3])
  # not mixed: by mixup_prob, or a Beta draw of exactly 1
  for draw in (_draw(u_apply=0.99), _draw(lam_mixup=1.0)):
    config.common.mixup_prob = 0.5
    mix = mixing.decide(config, draw, T, H, W)
    assert int(mix.mode) == mixing.NONE and float(mix.lam) == 1.0
    np.testing.assert_array_equal(mixing.blend(x, mix), x)


def test_mixed_losses_are_the_smoothed_mixed_one_hot_cross_entropy():
  # SoftTargetCrossEntropy of lam * smooth(y) + (1 - lam) * smooth(y reversed), written out here
  config = _config(mixup=0.8)
  rng = np.random.default_rng(4)
  logits = {k: rng.normal(size=(B, K)) for k in ('logits', 'xs', 'xm', 'xl')}
  logits['distillation_loss'] = np.float64(0.7)
  labels = np.array([3, 0, 6, 3])
  lam, eps = 0.35, config.common.label_smoothing
  one_hot = lambda y: np.eye(K)[y] * (1 - eps) + eps / K
  target = lam * one_hot(labels) + (1 - lam) * one_hot(labels[::-1])
  log_softmax = lambda z: z - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True)) - z.max(-1, keepdims=True)
  want = sum(w * np.mean(np.sum(-target * log_softmax(logits[k]), -1))
             for w, k in zip(config.common.loss_lamdb, ('logits', 'xs', 'xm', 'xl'))) + 0.2 * 0.7
  got, _ = _losses_and_target_grads(config, {k: jnp.asarray(v) for k, v in logits.items()}, jnp.asarray(labels),
                                    jnp.asarray(lam))
  assert float(got) == pytest.approx(want, rel=1e-13)


def test_settings_are_checked():
  assert not mixing.enabled(_config(mixup=0.0, cutmix=0.0))
  assert mixing.enabled(_config(mixup=0.0, cutmix=0.0, cutmix_minmax=(0.3, 0.6)))
  for change, message in ((dict(mixup_mode='pair'), "only 'batch'"), (dict(smixmode='sm_v1'), "only 'sm'"),
                          (dict(shufflemix=0.0), 'needs common.shufflemix > 0'),
                          (dict(cutmix_minmax=(0.8, 0.2)), 'min < max'), (dict(smprob=1.5), 'a probability')):
    with pytest.raises(ValueError, match=message):
      mixing.enabled(_config(mixup=0.8, **change))
  assert mixing.enabled(load_config_file('configs/umdr_ntu.py', 'fusion'))  # train_fusion.py mixes too
  with pytest.raises(ValueError, match='must be even'):
    mixing.draw(_config(mixup=0.8), jax.random.PRNGKey(0), (3, T, H, W, C))


def test_the_jax_rng_makes_each_step_reproducible_and_different():
  config = _config(**CASES['mixup+cutmix'], mixup_prob=0.8)
  rng = jax.random.PRNGKey(7)
  draw = jax.jit(lambda step: mixing.draw(config, steps.mixing_rng(rng, step), (B, T, H, W, C)))
  mixes = [jax.device_get(draw(s)) for s in range(40)]
  again = jax.device_get(draw(11))
  assert all(np.array_equal(a, b) for a, b in zip(again, mixes[11]))
  continuous = [float(m.lam) for m in mixes if int(m.mode) in (mixing.MIXUP, mixing.SHUFFLEMIX)]
  assert len(continuous) > 10 and len(set(continuous)) == len(continuous)   # a fresh Beta draw every step
  assert {int(m.mode) for m in mixes} == {mixing.NONE, mixing.MIXUP, mixing.SHUFFLEMIX, mixing.CUTMIX}
  # apart from the model's own keys of the step
  keys = steps.step_rngs(rng, 3)
  assert not any(np.array_equal(np.asarray(steps.mixing_rng(rng, 3)), np.asarray(k)) for k in keys.values())


# ------------------------------------------------------------------------- the jitted training step

@pytest.fixture(scope='module')
def tiny_step():
  """A tiny DSNV2 without dropout or random frame choice: the step's only randomness is the mixing."""
  def make(**common):
    config = make_tiny_config('DSNV2', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4)
    config.model.dropout = config.model.rcm_dropout = 0.0
    config.model.frame_sampling = 'centre'
    config.model.sample_size = 32
    config.common.xla_opt_level = 0
    config.common.update(common)
    mesh = parallel.make_mesh()
    model = build.build_model(config)
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=10)
    state = state_lib.create_train_state(model, config, tx, mesh, jax.random.PRNGKey(0))
    batch = pipeline.example_batch(config, 4, train=True, seed=3)
    batch = parallel.shard_batch({k: batch[k] for k in pipeline.batch_keys(config, train=True)}, mesh)
    step = steps.jit_train_step(model, config, tx, schedule)
    hp = steps.hparams(0.07, 0.2)

    def run(at_step):
      s = jax.tree.map(jnp.copy, state).replace(step=jnp.asarray(at_step, jnp.int32))
      return {k: float(v) for k, v in jax.device_get(step(s, batch, hp)[1]).items()}
    return run
  return {'off': make(), 'on': make(mixup=0.8, shufflemix=0.3, smprob=0.5)}


def test_training_step_mixes_reproducibly_and_differently_per_step(tiny_step):
  with jax.enable_x64(False):
    off = [tiny_step['off'](s) for s in (0, 1)]
    on = [tiny_step['on'](s) for s in (0, 1, 0)]
  assert all(np.isfinite(m['loss']) for m in off + on)
  assert off[0]['loss'] == off[1]['loss']          # without mixing the step number changes nothing here
  assert on[0] == on[2]                            # the same step, the same draw
  assert on[0]['loss'] != on[1]['loss']            # another step, another draw
  assert on[0]['loss'] != off[0]['loss'] and on[1]['loss'] != off[0]['loss']
  # the accuracy is the clips' own labels' (the original's ori_target), the same key in both
  assert set(on[0]) == set(off[0])


def test_the_fusion_mixes_each_stream_with_its_own_draw_and_targets():
  """train_fusion.py calls its Mixup once per stream (rgb with the labels, depth with the labels):
  two independent draws, and fusion_logits_rgb is trained on the rgb clip's mixed targets,
  fusion_logits_depth on the depth clip's. The step's loss is exactly that."""
  config = make_tiny_config('UMDRFusion', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4,
                            scc_depth=1, tcc_depth=1, dropout=0.0, rcm_dropout=0.0, frame_sampling='centre')
  config.common.update(mixup=0.8, shufflemix=0.3, smprob=0.5, mixup_prob=1.0)
  model = build.build_model(config)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype),
                           build.variable_shapes(config))
  b, t, size = 4, 8, 32
  batch = {'rgb': jnp.asarray(rng.normal(size=(b, t, size, size, 3)), jnp.float32),
           'depth': jnp.asarray(rng.normal(size=(b, t, size, size, 3)), jnp.float32),
           'label': jnp.asarray([0, 3, 1, 4])}
  hp = steps.hparams(0.07, 0.0)
  rngs = steps.step_rngs(jax.random.PRNGKey(1), 0)
  key = jax.random.PRNGKey(5)
  loss, (out, losses, _) = steps.forward_train(model, config, variables['params'], variables['batch_stats'], batch,
                                               hp, rngs, preprocess=False, mix_rng=key)
  # the draws the step must have made: one per stream, independent
  mixes = [mixing.draw(config, k, batch[s].shape) for k, s in zip(jax.random.split(key, 2), ('rgb', 'depth'))]
  assert float(mixes[0].lam) != float(mixes[1].lam)
  inputs = [mixing.blend(batch[s], m) for s, m in zip(('rgb', 'depth'), mixes)]
  ref_out, _ = model.apply(variables, *inputs, train=True, temp=hp['temp'], rngs=rngs, mutable=['batch_stats'])
  np.testing.assert_array_equal(np.asarray(out['fusion_logits_rgb']), np.asarray(ref_out['fusion_logits_rgb']))
  eps = 0.1
  labels, flipped = batch['label'], jnp.flip(batch['label'], 0)
  expected = 0.0
  for logits_key, mix in zip(('fusion_logits_rgb', 'fusion_logits_depth'), mixes):
    # the soft-target CE of the smoothed, mixed one-hot targets, written out
    onehot = lambda y: jax.nn.one_hot(y, 5) * (1 - eps) + eps / 5
    target = mix.lam * onehot(labels) + (1 - mix.lam) * onehot(flipped)
    logp = jax.nn.log_softmax(ref_out[logits_key].astype(jnp.float32), -1)
    expected = expected + jnp.mean(jnp.sum(-target * logp, -1))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  np.testing.assert_allclose(float(losses['ce']), float(expected), rtol=1e-5)
  # one shared draw would give another loss
  shared = [mixing.blend(batch[s], mixes[0]) for s in ('rgb', 'depth')]
  assert not np.array_equal(np.asarray(shared[1]), np.asarray(inputs[1]))
