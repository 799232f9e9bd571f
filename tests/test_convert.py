"""PyTorch checkpoint import/export: round trips, layout, architecture inference, errors, safety."""

import collections
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import flax
import numpy as np
import pytest
import torch

from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import
from rgbd_jax.convert import torch_layout
from rgbd_jax.convert import torch_pickle
from rgbd_jax.configs import to_json as config_to_json
from rgbd_jax.models import build

REPO = pathlib.Path(__file__).resolve().parent.parent


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _save(path, state_dict, wrap=True, prefix=''):
  model = collections.OrderedDict((prefix + k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())
  torch.save({'model': model, 'epoch': 7, 'bestacc': 42.0} if wrap else model, path)


@pytest.fixture(scope='module')
def unimodal(tiny_config, random_variables):
  """(config, random variables, their state_dict) of a tiny unimodal network with SEHeads 2."""
  config = tiny_config(SEHeads=2)
  variables = random_variables(build.variable_shapes(config), seed=1)
  return config, variables, torch_export.variables_to_state_dict(variables, config)


def _assert_same(a, b):
  fa, fb = _flat(a), _flat(b)
  assert set(fa) == set(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype, k
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


@pytest.mark.parametrize('network', ['I3DWTrans', 'FusionNet'])
def test_round_trip_through_pth_tar_is_exact(network, tiny_config, random_variables, tmp_path):
  config = tiny_config(network)
  variables = random_variables(build.variable_shapes(config), seed=3)
  state_dict = torch_export.variables_to_state_dict(variables, config)
  assert list(state_dict) == [e.key for e in torch_layout.original_entries(config)]
  counters = [k for k in state_dict if k.endswith('num_batches_tracked')]
  assert counters and all(state_dict[k].dtype == np.int64 and state_dict[k].shape == () for k in counters)
  path = str(tmp_path / 'model_best.pth.tar')
  torch_export.save_torch_checkpoint(path, state_dict, epoch=5, bestacc=60.0)
  saved = torch.load(path, map_location='cpu')  # the original's own loader
  assert saved['epoch'] == 5 and saved['bestacc'] == 60.0 and list(saved['model']) == list(state_dict)
  loaded_config, loaded = torch_import.load_torch_checkpoint(path, config)
  _assert_same(variables, loaded)
  assert loaded_config.to_dict() == config.to_dict()


def test_kernels_and_stats_land_where_the_contract_says(unimodal):
  config, variables, sd = unimodal
  p = _flat(variables)
  w = sd['Conv3d_1a_7x7.conv3d.weight']  # torch (out, in, 1, 7, 7)
  assert w.shape[2:] == (1, 7, 7)
  kernel = np.asarray(p[('params', 'Conv3d_1a_7x7', 'conv3d', 'kernel')])
  np.testing.assert_array_equal(np.transpose(w, (2, 3, 4, 1, 0)).reshape(kernel.shape), kernel)
  np.testing.assert_array_equal(sd['LinearMap.1.weight'], np.asarray(p[('params', 'LinearMap', '1', 'kernel')]).T)
  np.testing.assert_array_equal(sd['Mixed_3b.b0.bn.running_var'],
                                np.asarray(p[('batch_stats', 'Mixed_3b', 'b0', 'bn', 'var')]))
  assert sd['frp_module.rpconv1d.weight'].shape == (1, 2, 1)


def test_module_prefix_and_bare_state_dict(unimodal, tmp_path):
  config, variables, sd = unimodal
  path = str(tmp_path / 'bare.pth')
  _save(path, sd, wrap=False, prefix='module.')
  _, loaded = torch_import.load_torch_checkpoint(path, config)
  _assert_same(variables, loaded)


def test_architecture_is_read_from_the_checkpoint(unimodal, tiny_config, tmp_path, caplog):
  config, variables, sd = unimodal
  path = str(tmp_path / 'm.pth.tar')
  _save(path, sd)
  asked = tiny_config(SEHeads=1, N=4, num_classes=9, rcm_hidden=256, sample_duration=32, mlp_dim=40,
                      heads=4, width=0.25)
  asked.dataset.low_frames = 6
  with caplog.at_level(logging.INFO):
    got, loaded = torch_import.load_torch_checkpoint(path, asked)
  _assert_same(variables, loaded)
  for section, key in [('model', 'SEHeads'), ('model', 'N'), ('model', 'num_classes'), ('model', 'rcm_hidden'),
                       ('model', 'sample_duration'), ('model', 'mlp_dim'), ('dataset', 'low_frames'),
                       ('model', 'heads'), ('model', 'width')]:
    assert got[section][key] == config[section][key]
    line = f'checkpoint overrides {section}.{key}: {asked[section][key]} -> {config[section][key]}'
    assert sum(line == r.getMessage() for r in caplog.records) == 1, line
  overrides = [r.getMessage() for r in caplog.records if 'checkpoint overrides' in r.getMessage()]
  assert len(overrides) == 9, overrides


def test_inference_without_frp_and_recoupling(tiny_config, random_variables):
  config = tiny_config(frp=False, recoupling=False, N=3)
  sd = torch_export.variables_to_state_dict(random_variables(build.variable_shapes(config)), config)
  assert not any('rcm' in k or 'frp' in k for k in sd)
  found = torch_layout.infer_architecture(sd)
  assert found['model.frp'] is False and found['model.recoupling'] is False
  assert found['model.N'] == 3 and found['model.num_classes'] == 5
  assert found['model.width'] == 0.125 and found['model.dim'] == 32 and found['inner_dim'] == 32
  assert (found['dataset.low_frames'], found['dataset.media_frames'], found['dataset.high_frames']) == (4, 8, 12)


@pytest.mark.parametrize('case', ['wrong_shape', 'missing', 'unexpected'])
def test_mapping_errors_name_keys_and_shapes(case, unimodal, tmp_path):
  config, _, sd = unimodal
  sd = collections.OrderedDict(sd)
  key = 'dtn.multi_scale_transformers.1.transformer_enc_media.layers.0.1.fn.fc1.weight'
  if case == 'wrong_shape':
    sd[key] = np.zeros((47, 32), np.float32)
    expect = [key, '(47, 32)', '(32, 48)', 'dtn/multi_scale_transformers/1/transformer_enc_media']
  elif case == 'missing':
    del sd[key]
    expect = [f'missing torch key {key}', '(32, 48)']
  else:
    sd['dtn.rcm.extra.weight'] = np.zeros((3, 4), np.float32)
    expect = ['unexpected torch key dtn.rcm.extra.weight', '(3, 4)', 'params/dtn/rcm/extra/kernel']
  path = str(tmp_path / 'bad.pth.tar')
  _save(path, sd)
  with pytest.raises(ValueError) as err:
    torch_import.load_torch_checkpoint(path, config)
  for text in expect:
    assert text in str(err.value)


class _RunsCode:
  """Pickles as a call of os.system: loading it with pickle would run the command."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def test_pickled_code_is_never_run(unimodal, tmp_path):
  config, variables, sd = unimodal
  marker = tmp_path / 'was_run'
  model = collections.OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items())
  evil = str(tmp_path / 'evil.pth.tar')
  torch.save({'model': {'x': _RunsCode(marker), **model}, 'epoch': 1, 'bestacc': 0.0}, evil)
  with pytest.raises(ValueError, match=r'refused.*(posix|os)\.system'):
    torch_import.load_torch_checkpoint(evil, config)
  assert not marker.exists()
  legacy = str(tmp_path / 'evil_legacy.pth.tar')
  torch.save({'model': {'x': _RunsCode(marker), **model}}, legacy, _use_new_zipfile_serialization=False)
  with pytest.raises(ValueError, match=r'refused.*(posix|os)\.system'):
    torch_import.load_torch_checkpoint(legacy, config)
  assert not marker.exists()
  # The same in the optimizer entry: dropped, the weights load.
  odd = str(tmp_path / 'odd_optimizer.pth.tar')
  torch.save({'model': model, 'optimizer': {'state': _RunsCode(marker)}, 'epoch': 1, 'bestacc': 0.0}, odd)
  _, loaded = torch_import.load_torch_checkpoint(odd, config)
  _assert_same(variables, loaded)
  assert not marker.exists()
  assert not torch_pickle.contains_refused(torch_pickle.read_checkpoint(odd)['model'])


def test_legacy_format_and_non_checkpoints(tmp_path):
  base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
  tensors = {'w': base, 'row': base[1], 'col': base[:, 2], 'n': torch.tensor(5, dtype=torch.int64)}
  path = tmp_path / 'legacy.pth'
  torch.save({'model': tensors, 'epoch': 2}, str(path), _use_new_zipfile_serialization=False)
  got = torch_pickle.read_checkpoint(str(path))
  assert got['epoch'] == 2
  for k, v in tensors.items():
    np.testing.assert_array_equal(got['model'][k], v.numpy(), err_msg=k)
  (tmp_path / 'text.pth').write_bytes(b'hello')
  with pytest.raises(ValueError, match='not a torch checkpoint'):
    torch_pickle.read_checkpoint(str(tmp_path / 'text.pth'))
  with pytest.raises(FileNotFoundError):
    torch_pickle.read_checkpoint(str(tmp_path / 'none.pth'))


def test_tensor_views_and_dtypes_are_rebuilt(tmp_path):
  base = torch.arange(60, dtype=torch.float64).reshape(5, 12)
  tensors = {'view': base[1:4, 2:10:3].t(), 'row': base[2], 'half': torch.linspace(0, 1, 5).half(),
             'long': torch.tensor([1, -2], dtype=torch.int64), 'flag': torch.tensor([True, False]),
             'scalar': torch.tensor(3.5)}
  path = str(tmp_path / 't.pt')
  torch.save(tensors, path)
  got = torch_pickle.read_checkpoint(path)
  for k, v in tensors.items():
    assert got[k].dtype == v.numpy().dtype, k
    np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)


def test_reading_works_without_torch(unimodal, tmp_path):
  config, variables, sd = unimodal
  path = str(tmp_path / 'm.pth.tar')
  _save(path, sd)
  expected = str(tmp_path / 'expected.npz')
  np.savez(expected, **{'/'.join(k): np.asarray(v) for k, v in _flat(variables).items()})
  (tmp_path / 'config.json').write_text(config_to_json(config))
  script = textwrap.dedent(f"""
      import sys
      sys.modules['torch'] = None  # any `import torch` now raises ImportError
      import flax, numpy as np
      from rgbd_jax.convert import torch_import
      from rgbd_jax.configs import from_json as config_from_json
      config = config_from_json(open({str(tmp_path / 'config.json')!r}).read())
      _, v = torch_import.load_torch_checkpoint({path!r}, config)
      ref = np.load({expected!r})
      flat = {{'/'.join(k): np.asarray(x) for k, x in flax.traverse_util.flatten_dict(v).items()}}
      assert sorted(flat) == sorted(ref.files)
      assert all(np.array_equal(flat[k], ref[k]) for k in flat)
      from rgbd_jax.convert import torch_export
      try:
        torch_export.save_torch_checkpoint('never.pth.tar', {{}})
        raise AssertionError('wrote a checkpoint without torch')
      except ImportError as e:
        assert 'needs torch' in str(e)
      print('read without torch:', len(flat))
      """)
  res = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'read without torch' in res.stdout


def test_partial_loading_skips_heads_and_misfits(unimodal, tiny_config, random_variables, tmp_path):
  _, _, sd = unimodal
  sd = collections.OrderedDict(sd)
  sd['LinearMap.0.weight'] = np.ones(7, np.float32)  # a shape that does not fit
  path = str(tmp_path / 'pre.pth.tar')
  _save(path, sd)
  target_config = tiny_config(SEHeads=2, num_classes=11)  # a new dataset: other heads
  target = random_variables(build.variable_shapes(target_config), seed=9)
  loaded, report = torch_import.load_pretrained(path, target)
  heads = {f'dtn.mlp_head_{b}.1.{w}' for b in ('small', 'media', 'large') for w in ('weight', 'bias')}
  assert {k for k, why in report.skipped.items() if why == 'classification layer'} == heads
  assert '(7,)' in report.skipped['LinearMap.0.weight']
  assert set(report.skipped) == heads | {'LinearMap.0.weight'}
  counters = sum(k.endswith('num_batches_tracked') for k in sd)
  assert len(report.loaded) == len(sd) - len(report.skipped) - counters
  assert sorted(report.kept_init) == sorted(
      ['params/LinearMap/0/scale'] + [f'params/dtn/mlp_head_{b}/1/{w}' for b in ('small', 'media', 'large')
                                      for w in ('kernel', 'bias')])
  flat_new, flat_old = _flat(loaded), _flat(target)
  np.testing.assert_array_equal(flat_new[('params', 'LinearMap', '0', 'scale')],
                                flat_old[('params', 'LinearMap', '0', 'scale')])
  np.testing.assert_array_equal(flat_new[('params', 'dtn', 'mlp_head_small', '1', 'kernel')],
                                flat_old[('params', 'dtn', 'mlp_head_small', '1', 'kernel')])
  np.testing.assert_array_equal(flat_new[('params', 'dtn', 'mlp_head_small', '0', 'scale')],
                                sd['dtn.mlp_head_small.0.weight'])
  assert 'skipped' in report.summary()


def test_unimodal_checkpoint_into_a_fusion_stream(unimodal, tiny_config, random_variables):
  _, _, sd = unimodal
  fusion = random_variables(build.variable_shapes(tiny_config('FusionNet', SEHeads=2)), seed=4)
  loaded, report = torch_import.load_pretrained(sd, fusion, prefix='Modalit_rgb.')
  flat = _flat(loaded)
  np.testing.assert_array_equal(flat[('params', 'Modalit_rgb', 'LinearMap', '1', 'kernel')],
                                sd['LinearMap.1.weight'].T)
  assert {k for k in report.skipped if 'mlp_head' in k} == set(report.skipped)  # the fusion streams have no heads
  assert all(p.split('/')[1] != 'Modalit_rgb' for p in report.kept_init)
  assert any(p.split('/')[1] == 'Modalit_depth' for p in report.kept_init)


@pytest.mark.parametrize('name', ['dsn_ntu_rgb', 'dsn_nvgesture_depth_seheads2', 'fusion_nvgesture'])
def test_export_has_the_originals_exact_layout(name, golden_case, random_variables):
  """What the original's load_state_dict(strict=True) checks: same keys (in order), shapes, dtypes."""
  case = golden_case(name)
  config = case.config()
  variables = random_variables(build.variable_shapes(config))
  sd = torch_export.variables_to_state_dict(variables, config)
  assert [(k, tuple(v.shape), str(v.dtype)) for k, v in sd.items()] == case.layout


def test_convert_weights_script_both_ways(unimodal, tmp_path):
  """scripts/convert_weights.py: .pth.tar -> Orbax directory (+ config) -> .pth.tar, tensors unchanged."""
  config, _, sd = unimodal
  src = str(tmp_path / 'model_best.pth.tar')
  _save(src, sd)
  config_file = tmp_path / 'tiny_config.py'
  config_file.write_text(textwrap.dedent(f"""
      from rgbd_jax.configs import from_json as config_from_json
      def get_config(arg=None):
        return config_from_json({config_to_json(config)!r})
      """))
  orbax_dir = str(tmp_path / 'converted')
  back = str(tmp_path / 'back.pth.tar')
  run = lambda *args: subprocess.run([sys.executable, 'scripts/convert_weights.py', *args], capture_output=True,
                                     text=True, timeout=300, cwd=str(REPO))
  res = run('--config', str(config_file), '--config.model.N=5', '--checkpoint', src, '--out', orbax_dir)
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'checkpoint overrides model.N: 5 -> 2' in res.stderr
  assert os.path.exists(os.path.join(orbax_dir, 'config.json'))
  res = run('--to-torch', '--checkpoint', orbax_dir, '--out', back, '--epoch=3', '--bestacc=12.5')
  assert res.returncode == 0, res.stderr[-3000:]
  saved = torch.load(back, map_location='cpu')
  assert saved['epoch'] == 4 and saved['bestacc'] == 12.5  # --epoch: the epoch that trained them; the file holds it + 1
  assert list(saved['model']) == list(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(saved['model'][k].numpy(), v, err_msg=k)


def test_damaged_archive_is_a_clear_error(tmp_path):
  good = tmp_path / 'good.pt'
  torch.save({'w': torch.ones(4, 3)}, str(good))
  damaged = tmp_path / 'damaged.pt'
  with zipfile.ZipFile(good) as src, zipfile.ZipFile(damaged, 'w') as dst:
    for item in src.infolist():
      if not item.filename.endswith('/data/0'):
        dst.writestr(item, src.read(item.filename))
  with pytest.raises(ValueError, match=r'damaged\.pt.*data/0 is missing'):
    torch_pickle.read_checkpoint(str(damaged))
  short = tmp_path / 'short.pt'
  with zipfile.ZipFile(good) as src, zipfile.ZipFile(short, 'w') as dst:
    for item in src.infolist():
      data = src.read(item.filename)
      dst.writestr(item, data[:20] if item.filename.endswith('/data/0') else data)
  with pytest.raises(ValueError, match=r'holds 20 bytes, needs 12 x 4'):
    torch_pickle.read_checkpoint(str(short))
