"""The journal networks (DSNV2, UMDRFusion) on tiny configs: shapes the original fixes, any batch size, randomness.

The numbers against the original are in test_umdr_golden.py; here the
structure for every sample_duration / intar_fatcer the original accepts (from
the variable shapes alone), and a few small forward passes.
"""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import GOLDEN_DIR, make_random_variables, make_tiny_config
from rgbd_jax.models import build
from rgbd_jax.models.dtn import segment_centres
from rgbd_jax.models.ops import compile as compile_options
from rgbd_jax.models.umdr import dtn_v2


def _config(network='DSNV2', **model):
  model = {'N': 3, 'sample_duration': 8, **model}
  return make_tiny_config(network, **model)


def _jit(f):
  """Fastest compile: these programs run once."""
  return jax.jit(f, compiler_options=compile_options.compiler_options(0))


def _flat(tree):
  return {'/'.join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize('name', ('umdr_dsnv2_ntu_t32', 'umdr_dsnv2_nv_t64'))
def test_branch_tokens_kernels_and_frames_match_the_fixture(name):
  meta = json.loads((GOLDEN_DIR / 'umdr' / f'{name}.json').read_text())
  t, intar = meta['overrides']['sample_duration'], meta['overrides']['intar_fatcer']
  tokens = dtn_v2.branch_tokens(t, intar)
  assert list(tokens) == meta['branch_tokens']
  assert [dtn_v2.inception_kernel(n) for n in tokens] == meta['temporal_inception_kernels']
  assert [segment_centres(t, n).tolist() for n in tokens] == meta['branch_token_indices']


@pytest.mark.parametrize('frames', (16, 32, 64))
@pytest.mark.parametrize('intar', (1, 2, 3, 4, 16))
def test_every_sample_duration_and_intar_fatcer(frames, intar):
  """Branch j: (j + 1) * (T // intar) tokens and positions + 1, kernel int(sqrt(tokens)); RCMs act on T."""
  config = _config(sample_duration=frames, intar_fatcer=intar)
  shapes = _flat(build.variable_shapes(config)['params'])
  n = frames // intar
  for j in range(3):
    tokens = (j + 1) * n
    assert shapes[f'dtn/cls_tokens/{j}/pos_embedding'].shape == (1, tokens + 1, 32)
    k = int(tokens ** 0.5)
    b1b = shapes[f'dtn/multi_scale_transformers/{j}/0/b1b/conv3d/kernel'].shape
    assert (b1b[0] if k > 1 else 1) == k and len(b1b) == (3 if k > 1 else 2)
  for rcm in (1, 3, 6):
    assert shapes[f'SMS_layers/{rcm}/q/kernel'].shape == (frames, 16 * frames)
    assert shapes[f'SMS_layers/{rcm}/TM_project/0/kernel'].shape == (frames, 2 * frames)


def test_intar_fatcer_beyond_the_clip_is_a_clear_error():
  with pytest.raises(ValueError, match='intar_fatcer=32 leaves no token'):
    build.variable_shapes(_config(sample_duration=16, intar_fatcer=32))


@pytest.fixture(scope='module')
def tiny():
  config = _config()
  variables = make_random_variables(build.variable_shapes(config), seed=3)
  variables['params'] = jax.tree.map(lambda x: x * 0.3, variables['params'])
  variables['batch_stats'] = jax.tree.map(np.abs, variables['batch_stats'])
  return config, build.build_model(config), variables


def test_any_batch_size_and_deterministic_evaluation(tiny):
  """B = 1 keeps its batch axis (the original crashes there); evaluation is a function of its input."""
  config, model, variables = tiny
  run = _jit(lambda v, x: model.apply(v, x, train=False, temp=0.07))
  video = np.random.default_rng(0).normal(size=(2, 8, 32, 32, 3)).astype(np.float32)
  both = run(variables, video)
  one = run(variables, video[:1])
  assert one['logits'].shape == (1, 5) and one['rcm_projection_0'].shape == (1, 32)
  assert one['spatial_features'].shape == (1, 8, 32) and one['distillation_loss'].shape == ()
  np.testing.assert_allclose(one['logits'][0], both['logits'][0], rtol=2e-5, atol=2e-5)
  again = run(variables, video[:1])
  np.testing.assert_array_equal(one['logits'], again['logits'])
  np.testing.assert_array_equal(both['logits'], jnp.maximum(jnp.maximum(both['xs'], both['xm']), both['xl']))


def test_training_randomness_comes_from_the_rngs(tiny):
  """Frames per segment from the 'frames' key, dropout from 'dropout'; the same keys give the same step."""
  config, model, variables = tiny

  @_jit
  def run(v, x, seed):
    keys = dict(zip(('dropout', 'frames'), jax.random.split(jax.random.key(seed))))
    out, _ = model.apply(v, x, train=True, temp=0.07, rngs=keys, mutable=['batch_stats'])
    return out['logits'], out['dtn_branch0_tcnn_out']
  video = np.random.default_rng(1).normal(size=(1, 8, 32, 32, 3)).astype(np.float32)
  a, b, c = run(variables, video, 0), run(variables, video, 0), run(variables, video, 7)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.allclose(a[0], c[0])
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda v: model.apply(v, video, train=True, temp=0.07, mutable=['batch_stats']), variables)


def test_inputs_are_checked(tiny):
  config, model, variables = tiny
  with pytest.raises(ValueError, match=r'T=16 frames; this network was built for model.sample_duration=8'):
    model.apply(variables, jnp.zeros((1, 16, 32, 32, 3)), train=False)
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    model.apply(variables, jnp.zeros((1, 8, 32, 32, 1)), train=False)
  assert build.network(config).inputs == (('video', 3),)
  assert len(build.dummy_inputs(config)) == 1


def test_distillation_needs_as_many_layers_as_stages():
  with pytest.raises(ValueError, match='model.N must be >= model.sms_depth'):
    build.variable_shapes(_config(N=2))


def test_fusion_streams_are_frozen_and_any_batch_size_works():
  config = _config('UMDRFusion', dropout=0.0)
  shapes = build.variable_shapes(config)
  variables = make_random_variables(shapes, seed=5)
  variables['params'] = jax.tree.map(lambda x: x * 0.3, variables['params'])
  variables['batch_stats'] = jax.tree.map(np.abs, variables['batch_stats'])
  model = build.build_model(config)
  kind = build.network(config)
  assert kind.input_keys == ('rgb', 'depth') and kind.frozen == ('Modalit_rgb', 'Modalit_depth')
  rng = np.random.default_rng(2)
  rgb, depth = (rng.normal(size=(1, 8, 32, 32, 3)).astype(np.float32) for _ in range(2))
  labels = jnp.array([3])

  @_jit
  def grads(params, stats):
    def loss(p):
      out, new = model.apply({'params': p, 'batch_stats': stats}, rgb, depth, train=True, temp=0.5,
                             rngs={'dropout': jax.random.key(0), 'frames': jax.random.key(1)},
                             mutable=['batch_stats'])
      return kind.losses(config, out, labels, 0.0)['total'], (out, new)
    return jax.grad(loss, has_aux=True)(params)
  g, (out, new_stats) = grads(variables['params'], variables['batch_stats'])
  assert out['combined'].shape == (1, 5) and out['fusion_cls_features'].shape == (1, 32, 2)
  for m in kind.frozen:  # no gradient reaches the streams, and their BatchNorm statistics stay put
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g[m]))
    jax.tree.map(np.testing.assert_array_equal, new_stats['batch_stats'][m], variables['batch_stats'][m])
  assert float(jnp.abs(g['classifier1']['kernel']).max()) > 0
  assert float(jnp.abs(g['SCC_Module']['att_nets']['0']['1']['q']['kernel']).max()) > 0


@pytest.mark.parametrize('frames,intar', ((16, 2), (32, 2), (64, 4)))
def test_fusion_for_every_sample_duration(frames, intar):
  """cs16 / cs32 / cs64: T + 1 positions per modality, scc/tcc depths as configured."""
  config = _config('UMDRFusion', sample_duration=frames, intar_fatcer=intar, scc_depth=3, tcc_depth=2)
  params = build.variable_shapes(config)['params']
  assert params['pos_embedding_M'].shape == params['pos_embedding_K'].shape == (1, frames + 1, 32)
  assert sorted(params['SCC_Module']['att_nets']) == ['0', '1', '2']
  assert sorted(params['SCC_Module']['att_nets']['0']) == ['0', '1', '2']      # EnhanceModule, two AttentionNets
  assert sorted(params['TimesFormer']['att_nets']) == ['0', '1']
  assert sorted(params['TimesFormer']['att_nets']['0']) == ['0', '1']
  assert params['Modalit_rgb']['SMS_layers']['1']['q']['kernel'].shape == (frames, 16 * frames)
