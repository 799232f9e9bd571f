"""The variable tree maps 1:1 onto the original's state_dict (the naming contract).

Ground truth: the `layout` key lists of the golden fixtures (every state_dict
key of the original with its shape). Mapping rule of the contract: module path
joined by '.', kernel/scale -> weight, batch_stats mean/var -> running_mean/var.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from rgbd_jax import configs
from rgbd_jax.models.build import build_model

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden')
LEAVES = {'kernel': 'weight', 'scale': 'weight', 'mean': 'running_mean', 'var': 'running_var'}


def torch_key(path):
  *modules, leaf = path[1:]  # path[0] is the collection
  return '.'.join([*modules, LEAVES.get(leaf, leaf)])


def golden_config(name):
  c = configs.base_config()
  if name.startswith('dsn_nvgesture') or name.startswith('fusion_nvgesture'):
    c.common.dataset = 'NvGesture'
  with open(os.path.join(GOLDEN, name + '.json')) as f:
    spec = json.load(f)
  c.model.num_classes = spec['overrides']['num_classes']
  c.model.SEHeads = spec['overrides'].get('SEHeads', 1)
  c.model.Network = spec['overrides']['Network']
  return c, spec


@pytest.mark.parametrize('name', ['dsn_ntu_rgb', 'dsn_nvgesture_depth_seheads2', 'fusion_nvgesture'])
def test_tree_matches_golden_layout(name):
  config, spec = golden_config(name)
  model = build_model(config)
  video = jax.ShapeDtypeStruct((1, 64, 64, 64, 3), jnp.float32)
  heat = jax.ShapeDtypeStruct((1, 64, 64, 64, 1), jnp.float32)
  inputs = (video, heat, video, heat) if config.model.Network == 'FusionNet' else (video, heat)
  abstract = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a, train=False), *inputs)
  assert set(abstract) == {'params', 'batch_stats'}
  ours = {}
  for path, leaf in flatten_dict(abstract).items():
    key = torch_key(path)
    assert key not in ours, f'two variables map to {key}'
    ours[key] = leaf.shape
  layout = {k: tuple(s) for k, s, _ in spec['layout'] if not k.endswith('num_batches_tracked')}
  assert sorted(set(layout) - set(ours)) == []  # missing in ours
  assert sorted(set(ours) - set(layout)) == []  # extra in ours
  for key, shape in layout.items():
    assert int(np.prod(ours[key])) == int(np.prod(shape)), (key, ours[key], shape)
