"""The converter on the journal's checkpoints: exact layouts, architecture from the tensors, clear refusals."""

import json
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from rgbd_jax import configs
from conftest import GOLDEN_DIR, REPO, load_config_file, make_random_variables, make_tiny_config
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import
from rgbd_jax.convert import torch_layout
from rgbd_jax.convert import umdr_import
from rgbd_jax.convert import umdr_layout
from rgbd_jax.models import build
from test_umdr_golden import UmdrCase


def _zeros(layout):
  return {k: np.zeros(s, np.int64 if d == 'int64' else np.float32) for k, s, d in layout}


def _layout(state_dict):
  return [[k, list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in state_dict.items()]


def _tiny(network='DSNV2', **model):
  return make_tiny_config(network, **{'N': 3, 'sample_duration': 8, **model})


@pytest.mark.parametrize('name', ('umdr_dsnv2_ntu_t32', 'umdr_dsnv2_nv_t64', 'umdr_fusion_ntu_t32'))
def test_export_has_the_originals_exact_layout(name):
  """Keys in the original's order, shapes and dtypes: what load_state_dict(strict=True) checks."""
  case = UmdrCase(name)
  config = case.config()
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), build.variable_shapes(config))
  state_dict = torch_export.variables_to_state_dict(variables, config)
  if case.fusion:
    fusion, rgb, depth = umdr_layout.split_fusion_state_dict(state_dict)
    assert _layout(fusion) == case.meta['layout']
    assert _layout(rgb) == case.meta['layout_rgb'] and _layout(depth) == case.meta['layout_depth']
  else:
    assert _layout(state_dict) == case.meta['layout']


@pytest.mark.parametrize('name,expected', [
    ('umdr_dsnv2_ntu_t32', dict(Network='DSNV2', sample_duration=32, intar_fatcer=2, num_classes=60)),
    ('umdr_dsnv2_nv_t64', dict(Network='DSNV2', sample_duration=64, intar_fatcer=4, num_classes=25)),
    ('umdr_fusion_ntu_t32', dict(Network='UMDRFusion', sample_duration=32, intar_fatcer=2, num_classes=60,
                                 scc_depth=2, tcc_depth=4)),
])
def test_architecture_is_read_from_the_tensors(name, expected):
  """Onto the conference's NTU config (I3DWTrans, T=64): the journal network, its T, intar_fatcer, classes."""
  meta = json.loads((GOLDEN_DIR / 'umdr' / f'{name}.json').read_text())
  state_dict = _zeros(meta['layout'])
  if 'layout_rgb' in meta:
    state_dict = umdr_import.merge_fusion(state_dict, _zeros(meta['layout_rgb']), _zeros(meta['layout_depth']))
  found = torch_layout.infer_architecture(state_dict)
  config = torch_layout.apply_architecture(load_config_file('configs/ntu.py'), found)
  assert configs.num_classes(config) == expected.pop('num_classes')
  for key, value in {**expected, 'N': 6, 'sms_depth': 3, 'dim': 512, 'width': 1.0, 'mlp_dim': 768}.items():
    assert config.model[key] == value, key
  assert config.model.heads * config.model.dim_head == 512


def test_conference_checkpoints_are_still_the_conference_networks():
  for name, network in (('dsn_ntu_rgb', 'I3DWTrans'), ('fusion_nvgesture', 'FusionNet')):
    meta = json.loads((GOLDEN_DIR / f'{name}.json').read_text())
    assert torch_layout.infer_architecture(_zeros(meta['layout']))['model.Network'] == network


@pytest.mark.parametrize('model', [dict(sample_duration=16, intar_fatcer=4, num_classes=7, N=4),
                                   dict(sample_duration=8, intar_fatcer=8, sms_depth=2, N=3, dim=48, heads=3)])
def test_round_trip_through_pth_tar_is_exact(model, tmp_path):
  config = _tiny(**model)
  variables = make_random_variables(build.variable_shapes(config), seed=1)
  state_dict = torch_export.variables_to_state_dict(variables, config)
  torch_export.save_torch_checkpoint(str(tmp_path / 'm.pth.tar'), state_dict, epoch=3)
  loaded_config, loaded = torch_import.load_torch_checkpoint(str(tmp_path / 'm.pth.tar'), _tiny())
  assert configs.num_classes(loaded_config) == model.get('num_classes', 5)
  for key, value in model.items():
    if key not in ('heads', 'num_classes'):  # heads * dim_head is in the tensors; the split is the config's
      assert loaded_config.model[key] == value, key
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_fusion_round_trip_through_the_three_checkpoints(tmp_path):
  config = _tiny('UMDRFusion', scc_depth=1, tcc_depth=3, num_classes=4)
  variables = make_random_variables(build.variable_shapes(config), seed=2)
  fusion, rgb, depth = umdr_layout.split_fusion_state_dict(torch_export.variables_to_state_dict(variables, config))
  assert not any(k.startswith('Modalit_') for k in fusion) and 'SMS_layers.1.q.weight' in rgb
  for name, sd, epoch in (('fusion', fusion, 1), ('rgb', rgb, 40), ('depth', depth, 40)):
    torch_export.save_torch_checkpoint(str(tmp_path / f'{name}.pth.tar'), sd, epoch=epoch)
  base = _tiny()
  with pytest.raises(ValueError, match='its rgb stream is model.rgb_checkpoint, which is not set'):
    umdr_import.load_checkpoint(str(tmp_path / 'fusion.pth.tar'), base)
  base.model.rgb_checkpoint = str(tmp_path / 'rgb.pth.tar')
  base.model.depth_checkpoint = str(tmp_path / 'depth.pth.tar')
  loaded_config, loaded, info = umdr_import.load_checkpoint(str(tmp_path / 'fusion.pth.tar'), base)
  assert loaded_config.model.Network == 'UMDRFusion' and loaded_config.model.stream_epoch == -1
  assert info['stream_epochs'] == {'rgb': 39, 'depth': 39} and info['trained_epoch'] == 0
  assert (loaded_config.model.scc_depth, loaded_config.model.tcc_depth, loaded_config.model.num_classes) == (1, 3, 4)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  with pytest.raises(ValueError, match='give them as model.rgb_checkpoint and model.depth_checkpoint'):
    torch_import.load_torch_checkpoint(str(tmp_path / 'fusion.pth.tar'), _tiny())


def _dsnv2_state_dict():
  meta = json.loads((GOLDEN_DIR / 'umdr' / 'umdr_dsnv2_nv_t64.json').read_text())
  return _zeros(meta['layout'])


def test_a_checkpoint_that_fits_nothing_says_what_it_looks_like():
  sd = _dsnv2_state_dict()
  del sd['LinearMap.2.weight'], sd['LinearMap.2.bias']
  sd['LinearMap.3.weight'] = np.zeros((512, 512), np.float32)
  with pytest.raises(ValueError) as e:
    torch_layout.infer_architecture(sd)
  msg = str(e.value)
  assert 'no tensor \'LinearMap.2.weight\'' in msg and 'looks most like the journal unimodal network (DSNV2)' in msg
  assert 'missing (2 kinds of key): LinearMap.2.weight, LinearMap.2.bias' in msg
  assert 'unexpected (1 kinds of key): LinearMap.3.weight' in msg
  with pytest.raises(ValueError, match='looks like none of the known networks'):
    torch_layout.infer_architecture({'features.0.weight': np.zeros((3, 3), np.float32)})


def test_a_renamed_tensor_is_named_both_ways(tmp_path):
  sd = _dsnv2_state_dict()
  sd['dtn.cls_tokens.1.token'] = sd.pop('dtn.cls_tokens.1.cls_token')
  config = torch_layout.apply_architecture(_tiny(), torch_layout.infer_architecture(sd))
  with pytest.raises(ValueError) as e:
    torch_import.state_dict_to_variables(sd, build.variable_shapes(config))
  assert 'unexpected torch key dtn.cls_tokens.1.token' in str(e.value)
  assert 'missing torch key dtn.cls_tokens.1.cls_token' in str(e.value)


def test_the_convert_script_refuses_in_one_line(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  sd = _dsnv2_state_dict()
  del sd['stem.0.conv3d.weight']
  torch.save({'model': {k: torch.from_numpy(v) for k, v in sd.items()}, 'epoch': 1}, str(tmp_path / 'bad.pth.tar'))
  res = subprocess.run([sys.executable, 'scripts/convert_weights.py', '--config', 'configs/umdr_ntu.py',
                        '--checkpoint', str(tmp_path / 'bad.pth.tar'), '--out', str(tmp_path / 'out')],
                       capture_output=True, text=True, timeout=300, cwd=str(REPO))
  assert res.returncode == 1, res.stderr[-2000:]
  assert 'Traceback' not in res.stderr
  assert 'error: DSNV2: checkpoint has no tensor \'stem.0.conv3d.weight\'' in res.stderr
  assert 'missing (1 kinds of key): stem.0.conv3d.weight' in res.stderr
