"""Tiny unimodal and fusion networks: shapes, modes, determinism, compilation, bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgbd_jax import configs
from rgbd_jax.models import dtn
from rgbd_jax.models.build import build_model, sharpness_temperature

T, S, CLASSES, DIM = 8, 32, 5, 16


def tiny_config(network='I3DWTrans', **model):
  c = configs.base_config()
  c.model.Network = network
  c.model.num_classes = CLASSES
  c.model.width = 0.125
  c.model.dim = DIM
  c.model.heads = 2
  c.model.dim_head = 8
  c.model.mlp_dim = 24
  c.model.N = 1
  c.model.sample_duration = T
  c.model.w = 3
  c.dataset.low_frames, c.dataset.media_frames, c.dataset.high_frames = 2, 4, 6
  for k, v in model.items():
    c.model[k] = v
  return c


def clip(b=2, t=T, s=S, seed=0, channels=3):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return (jax.random.uniform(k1, (b, t, s, s, channels), minval=-1, maxval=1),
          jax.random.uniform(k2, (b, t, s, s, 1)))


RNGS = {'dropout': jax.random.PRNGKey(7), 'frames': jax.random.PRNGKey(8)}
# Tiny graphs run once or twice here: compile fast rather than optimise (the bulk of these tests' time).
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0,
                                                   'xla_llvm_disable_expensive_passes': True})


def fake_variables(model, *inputs, seed=0):
  """Random variables of the model's tree without compiling its initialisers (fast tests)."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name == 'kernel':
      value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    else:
      value = rng.normal(size=leaf.shape) * 0.1
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='module')
def dsn():
  model = build_model(tiny_config())
  video, heat = clip()
  return model, fake_variables(model, video, heat), video, heat


def test_dsn_eval_outputs_and_determinism(dsn):
  model, variables, video, heat = dsn
  traces = []

  def fwd(v, x, h, t):
    traces.append(1)
    return model.apply(v, x, h, train=False, temp=t)

  apply = jit(fwd)
  out = apply(variables, video, heat, 0.5)
  for k in ('logits', 'xs', 'xm', 'xl'):
    assert out[k].shape == (2, CLASSES)
  for k in ('feat_small', 'feat_media', 'feat_large', 'rcm_spatial_weights'):
    assert out[k].shape == (2, DIM)
  assert out['spatial_features'].shape == out['rcm_out'].shape == (2, T, DIM)
  assert out['distillation_loss'].shape == ()
  assert out['chanmean_Mixed_5c'].shape[0] == 2
  np.testing.assert_array_equal(out['logits'], jnp.maximum(jnp.maximum(out['xs'], out['xm']), out['xl']))
  again = apply(variables, video, heat, 0.5)
  for k in out:
    np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(again[k]))
  # sharpness: the branch logits are divided by temp
  halved = apply(variables, video, heat, 1.0)
  np.testing.assert_allclose(np.asarray(halved['xs']) * 2.0, np.asarray(out['xs']), rtol=1e-5, atol=1e-6)
  apply(variables, video, heat, 0.07)
  assert len(traces) == 1  # temp is traced: one compilation for every epoch's temperature


def test_dsn_train_mode_uses_batch_stats_dropout_and_frames(dsn):
  model, variables, video, heat = dsn
  step = jit(lambda v, x, h, r: model.apply(v, x, h, train=True, temp=1.0, rngs=r, mutable=['batch_stats']))
  out, mutated = step(variables, video, heat, RNGS)
  assert set(mutated) == {'batch_stats'}
  old = jax.tree_util.tree_leaves(variables['batch_stats'])
  new = jax.tree_util.tree_leaves(mutated['batch_stats'])
  assert all(a.shape == b.shape for a, b in zip(old, new))
  assert all(not np.allclose(a, b) for a, b in zip(old, new))
  assert out['logits'].shape == (2, CLASSES)
  same, _ = step(variables, video, heat, RNGS)
  np.testing.assert_array_equal(np.asarray(out['logits']), np.asarray(same['logits']))
  other, _ = step(variables, video, heat, {'dropout': jax.random.PRNGKey(1), 'frames': RNGS['frames']})
  assert not np.allclose(np.asarray(out['logits']), np.asarray(other['logits']))
  with pytest.raises(Exception):  # batch statistics must be declared mutable
    model.apply(variables, video, heat, train=True, rngs=RNGS)


@pytest.mark.parametrize('kind', ['size', 'time', 'channels', 'heat_channels', 'branch'])
def test_bad_inputs_raise_clear_errors(dsn, kind):
  model, variables, video, heat = dsn
  if kind == 'size':
    video, heat = clip(s=48)
    match = 'multiples of 32'
  elif kind == 'time':
    video, heat = clip(t=T + 2)
    match = f'T={T}'
  elif kind == 'channels':
    video, _ = clip(channels=1)
    match = '3 channels'
  elif kind == 'heat_channels':
    heat = jnp.concatenate([heat, heat], axis=-1)
    match = 'heatmap'
  else:
    model = build_model(tiny_config(recoupling=False))
    video, heat = clip(t=4)
    match = 'samples 6 frames'
  with pytest.raises(ValueError, match=match):
    model.apply(variables, video, heat, train=False)


def test_frp_variants():
  video, heat = clip(b=1)
  no_frp = build_model(tiny_config(frp=False))
  v = jax.eval_shape(lambda: no_frp.init(jax.random.PRNGKey(0), video, None, train=False))
  assert 'frp_module' not in v['params']
  with pytest.raises(ValueError, match='needs the heatmap'):
    jax.eval_shape(lambda: build_model(tiny_config()).init(jax.random.PRNGKey(0), video, None, train=False))
  # FRP with a window w < 1 is the identity: Mixed_3b's output is doubled and no heatmap is needed
  identity = build_model(tiny_config(w=0))
  v = jax.eval_shape(lambda: identity.init(jax.random.PRNGKey(0), video, None, train=False))
  assert v['params']['frp_module']['rpconv1d']['weight'].shape == (1, 2, 1)


def test_segments_and_sampling():
  segs = dtn.segments(64, 16)
  assert [len(s) for s in segs] == [4] * 16 and segs[3] == range(12, 16)
  np.testing.assert_array_equal(dtn.segment_centres(64, 16), [int(np.mean(list(s))) for s in segs])
  np.testing.assert_array_equal(dtn.segment_centres(64, 48)[:4], [0, 1, 2, 4])
  draws = np.stack([np.asarray(dtn.random_segment_choice(jax.random.PRNGKey(i), 64, 48)) for i in range(30)])
  lo = np.array([s.start for s in dtn.segments(64, 48)])
  hi = np.array([s.stop for s in dtn.segments(64, 48)])
  assert ((draws >= lo) & (draws < hi)).all()
  assert (draws != draws[0]).any()


def test_fusion_forward_eval_and_train():
  model = build_model(tiny_config('FusionNet'))
  rgb, rgb_heat = clip(seed=1)
  depth, depth_heat = clip(seed=2)
  args = (rgb, rgb_heat, depth, depth_heat)
  variables = fake_variables(model, *args)
  assert {'Modalit_rgb', 'Modalit_depth', 'crossFusion', 'crossFusionT', 'fusion_model', 'fc'} <= set(
      variables['params'])
  assert 'mlp_head_small' not in variables['params']['Modalit_rgb']['dtn']
  apply = jit(lambda v, *a: model.apply(v, *a, train=False, temp=1.0))
  out = apply(variables, *args)
  for k in ('fusion_logits', 'logits_rgb', 'logits_depth'):
    assert out[k].shape == (2, CLASSES)
  assert out['F_M'].shape == out['F_K'].shape == out['de'].shape == (2, DIM)
  assert out['en'].shape == (2, 256)
  assert out['bce_logit_rgb'].shape == out['bce_logit_depth'].shape == (2,)
  np.testing.assert_allclose(out['distillation_loss'],
                             out['distillation_loss_rgb'] + out['distillation_loss_depth'], rtol=1e-6)
  # the spatial interaction's raw reshape: torch (B, C, T) memory read as (B, T, C)
  s = jnp.swapaxes(out['spatial_fusion'].reshape(2, DIM, T), 1, 2)
  assert s.shape == (2, T, DIM)
  np.testing.assert_array_equal(np.asarray(out['fusion_logits']), np.asarray(apply(variables, *args)['fusion_logits']))
  train = jit(lambda v, *a: model.apply(v, *a, train=True, temp=1.0, rngs=RNGS, mutable=['batch_stats']))
  out_t, mutated = train(variables, *args)
  assert out_t['fusion_logits'].shape == (2, CLASSES)
  assert not np.allclose(mutated['batch_stats']['crossFusion']['1']['mean'],
                         variables['batch_stats']['crossFusion']['1']['mean'])
  with pytest.raises(ValueError, match='same shape'):
    model.apply(variables, rgb, rgb_heat, depth[:1], depth_heat[:1], train=False)


def test_bfloat16_compute_runs():
  model = build_model(tiny_config(dtype='bfloat16'))
  video, heat = clip()
  variables = fake_variables(model, video, heat)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
  out = jit(lambda v, x, h: model.apply(v, x, h, train=False, temp=1.0))(variables, video, heat)
  assert np.isfinite(np.asarray(out['logits'], np.float32)).all()


def test_sharpness_temperature_schedule():
  c = configs.base_config()
  assert sharpness_temperature(c, 0) == pytest.approx(0.04)
  assert sharpness_temperature(c, 10) == pytest.approx(0.04 + 10 * 0.03 / 29)
  assert sharpness_temperature(c, 29) == pytest.approx(0.07)
  assert sharpness_temperature(c, 99) == pytest.approx(0.07)
  c.model.sharpness = False
  assert sharpness_temperature(c, 5) == 1.0


def test_build_model_rejects_unknown_network():
  with pytest.raises(ValueError, match='Network'):
    build_model(tiny_config('C3D'))
