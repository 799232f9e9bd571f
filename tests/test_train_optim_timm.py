"""The journal's (UMDR) optimiser and schedule, timm 0.6's create_optimizer / create_scheduler (common.opt, common.sched).

timm is not a dependency: its rules are written out here from its source (timm 0.6.11, the
journal's requirements.txt), and the update itself is run by torch.optim.SGD(nesterov=True)
with timm's two parameter groups.
"""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from conftest import GoldenCase, load_config_file
from rgbd_jax import configs
from rgbd_jax.convert import torch_import
from rgbd_jax.models import build
from rgbd_jax.train import optim
from test_umdr_golden import UmdrCase


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _timm_no_decay(name: str, shape) -> bool:
  # timm.optim.optim_factory.param_groups_weight_decay (no model defines no_weight_decay())
  return len(shape) <= 1 or name.endswith('.bias')


@pytest.mark.parametrize('case', ['umdr/umdr_dsnv2_ntu_t32', 'umdr/umdr_fusion_ntu_t32', 'dsn_ntu_rgb',
                                  'fusion_nvgesture'])
def test_decay_groups_follow_timm_on_the_originals_parameters(case):
  # the original's parameter names and shapes (the fixtures' layouts: its state_dict) against our tree
  case = UmdrCase(case.split('/')[1]) if case.startswith('umdr/') else GoldenCase(case)
  config = case.config()
  shapes = build.variable_shapes(config)
  flat = flax.traverse_util.flatten_dict(shapes)
  decays = flax.traverse_util.flatten_dict(optim.no_weight_decay_mask(shapes['params']))
  seen, kinds = set(), set()
  for key, shape, _ in case.meta['layout']:
    if key.endswith(('running_mean', 'running_var', 'num_batches_tracked')):
      continue
    where, how = torch_import.flax_location(key, flat)
    assert how != 'none' and where[0] == 'params', key
    assert decays[where[1:]] == (not _timm_no_decay(key, shape)), key
    seen.add(where[1:])
    kinds.add(decays[where[1:]])
  frozen = build.network(config).frozen
  trained = {k for k in decays if not any(k[0] == f for f in frozen)}
  assert seen == trained and kinds == {True, False}


def _original_epoch_lrs(sched, *, lr, min_lr, warmup_lr, warmup_epochs, epochs, decay_epochs, decay_rate):
  """The lr each epoch of the journal's train.py trains at, following timm's scheduler objects.

  The scheduler sets the group's lr to the warm-up start when built (warmup_t > 0); train.py
  then calls scheduler.step(epoch) after training each epoch.
  """
  def timm_value(t):
    if t < warmup_epochs:
      return warmup_lr + t * ((lr - warmup_lr) / warmup_epochs)
    if sched == 'cosine':  # cycle_limit 1, cycle_mul 1, k_decay 1, no warm-up prefix
      cycle, t_curr = t // epochs, t - epochs * (t // epochs)
      if cycle >= 1:
        return min_lr
      return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t_curr ** 1.0 / epochs ** 1.0))
    return lr * (decay_rate ** (t // decay_epochs))

  group_lr = warmup_lr if warmup_epochs else lr
  trained = []
  for epoch in range(epochs):
    trained.append(group_lr)
    group_lr = timm_value(epoch)
  return trained


@pytest.mark.parametrize('arg', [None, 'fusion'])
def test_epoch_rates_are_the_journal_schedulers(arg):
  config = load_config_file('configs/umdr_ntu.py', arg)
  c = config.common
  assert (c.sched, c.opt) == (('step' if arg else 'cosine'), 'sgd')
  want = _original_epoch_lrs(c.sched, lr=c.learning_rate, min_lr=c.learning_rate_min, warmup_lr=c.warmup_lr,
                             warmup_epochs=c.warmup_epochs, epochs=c.epochs, decay_epochs=c.decay_epochs,
                             decay_rate=c.decay_rate)
  got = optim.timm_epoch_rates(config)
  np.testing.assert_array_equal(got, np.array(want))
  assert got[0] == got[1] == 1e-6 and len(got) == 100
  if arg:  # step: x0.1 every 10 epochs, a step late
    assert got[6] == got[10] == 0.01 and got[11] == pytest.approx(1e-3) and got[21] == pytest.approx(1e-4)
  else:
    # the cosine runs over all 100 epochs from index 5 (the warm-up is not a prefix), a step late
    assert got[5] < got[6] < 0.01 and np.all(np.diff(got[6:]) < 0) and 1e-5 < got[99] < 3e-5
  # the per-step schedule: every step of an epoch at its epoch's rate (also through accumulation)
  spe = 7
  _, schedule = optim.make_optimizer(config, steps_per_epoch=spe)
  for step in (0, 6, 7, 13, 14, 40, 99 * spe, 99 * spe + 6, 100 * spe + 3):
    assert float(schedule(step)) == want[min(step // spe, 99)], step
  config.common.accumulation_steps = 7
  _, micro = optim.make_optimizer(config, steps_per_epoch=spe * 7)
  for step in (0, 48, 49, 7 * 40 + 3):
    assert float(micro(step)) == want[step // 49], step


def test_schedule_settings_are_checked():
  config = load_config_file('configs/umdr_ntu.py')
  config.common.sched = 'multistep'
  with pytest.raises(ValueError, match=r"common.sched must be '' .*'cosine', 'step'.*got 'multistep'"):
    optim.make_optimizer(config, steps_per_epoch=3)
  config.common.sched, config.common.opt = 'cosine', 'adamw'
  with pytest.raises(ValueError, match=r"common.opt must be '' .*'sgd'.*got 'adamw'"):
    optim.make_optimizer(config, steps_per_epoch=3)
  # the conference's plateau schedule is not run next to timm's
  config.common.opt, config.common.scheduler.name = 'sgd', 'ReduceLR'
  assert not optim.uses_plateau(config)
  config.common.sched = ''
  assert optim.uses_plateau(config)


def _problem():
  rng = np.random.default_rng(3)
  params = {'dense': {'kernel': rng.normal(size=(5, 4)), 'bias': rng.normal(size=(4,))},
            'norm': {'scale': 1 + 0.1 * rng.normal(size=(4,))},
            'cls_token': rng.normal(size=(1, 1, 4))}
  x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 4))
  return params, x, y


def _loss(p, x, y, np_):
  h = np_.tanh(x @ p['dense']['kernel'] + p['dense']['bias']) * p['norm']['scale'] + p['cls_token'][0]
  return 10.0 * np_.mean((h - y) ** 2)


def test_timm_sgd_steps_equal_torch_nesterov_sgd_with_timms_groups():
  params, x, y = _problem()
  lr, wd, clip, steps = 0.05, 0.02, 0.5, 3
  config = configs.base_config()
  config.common.opt, config.common.sched = 'sgd', 'cosine'
  config.common.weight_decay, config.common.momentum, config.model.grad_clip = wd, 0.9, clip
  tx, _ = optim.make_optimizer(config, steps_per_epoch=1, learning_rate=lr)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  for _ in range(steps):
    g = jax.grad(_loss)(p, x, y, jnp)
    u, state = tx.update(g, state, p, lr_scale=1.0)
    p = optax.apply_updates(p, u)

  named = {'.'.join(k): torch.tensor(v, requires_grad=True)
           for k, v in flax.traverse_util.flatten_dict(params).items()}
  named = {k.replace('.kernel', '.weight').replace('.scale', '.weight'): v for k, v in named.items()}
  groups = [{'params': [v for k, v in named.items() if _timm_no_decay(k, v.shape)], 'weight_decay': 0.0},
            {'params': [v for k, v in named.items() if not _timm_no_decay(k, v.shape)], 'weight_decay': wd}]
  assert [len(g['params']) for g in groups] == [2, 2]
  sgd = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
  tp = {'dense': {'kernel': named['dense.weight'], 'bias': named['dense.bias']},
        'norm': {'scale': named['norm.weight']}, 'cls_token': named['cls_token']}
  norms = []
  for _ in range(steps):
    sgd.zero_grad()
    _loss(tp, torch.tensor(x), torch.tensor(y), torch).backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(list(named.values()), clip)))
    sgd.step()
  assert min(norms) > clip  # the clipping acted
  got = flax.traverse_util.flatten_dict(jax.device_get(p))
  want = flax.traverse_util.flatten_dict(jax.tree.map(lambda t: t.detach().numpy(), tp))
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=str(k))
  # the groups matter at this tolerance: decaying the 1-D leaves too, or plain momentum, moves them elsewhere
  flat0 = flax.traverse_util.flatten_dict(params)
  assert min(np.abs(got[k] - flat0[k]).max() for k in got) > 1e-3
  for change in ({'opt': ''}, {'weight_decay': 0.0}):
    other = configs.base_config()
    other.common.update({'opt': 'sgd', 'sched': 'cosine', 'weight_decay': wd, 'momentum': 0.9, **change})
    other.model.grad_clip = clip
    tx2, _ = optim.make_optimizer(other, steps_per_epoch=1, learning_rate=lr)
    p2 = jax.tree.map(jnp.asarray, params)
    s2 = tx2.init(p2)
    for _ in range(steps):
      u, s2 = tx2.update(jax.grad(_loss)(p2, x, y, jnp), s2, p2, lr_scale=1.0)
      p2 = optax.apply_updates(p2, u)
    diff = max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p)))
    assert diff > 1e-6, change
