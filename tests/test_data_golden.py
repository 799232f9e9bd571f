"""The evaluation clips of the original's loader on ntu_tiny (tests/golden/data_ntu_eval.*), rgb and depth,
through the in-process pipeline, scripts/dump_clips.py, and a TFDS build (scripts/prepare_tfds.py)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rgbd_jax.data import dump

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / 'tests' / 'golden'
TINY = GOLDEN / 'ntu_tiny'
MODALITY = {'rgb': 'M', 'depth': 'K'}


def _golden():
  meta = json.loads((GOLDEN / 'data_ntu_eval.json').read_text())
  with np.load(GOLDEN / 'data_ntu_eval.npz') as z:
    return meta, {k: z[k] for k in z.files}


def _ntu_config(modality):
  spec = importlib.util.spec_from_file_location('_ntu_config', REPO / 'configs' / 'ntu.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  meta, _ = _golden()
  c = module.get_config()
  c.common.data = str(TINY)
  c.common.splits = str(TINY / 'dataset_splits' / '@CS')
  c.dataset.type = MODALITY[modality]
  c.model.sample_size = meta['sample_size']
  c.model.sample_duration = meta['sample_duration']
  c.model.w = meta['w']
  c.dataset.resize = tuple(meta['resize'])
  c.dataset.crop_size = meta['crop_size']
  return c


def _overrides(modality):
  meta, _ = _golden()
  return [f'--config.common.data={TINY}', f'--config.common.splits={TINY}/dataset_splits/@CS',
          f'--config.dataset.type={MODALITY[modality]}', f'--config.model.sample_size={meta["sample_size"]}',
          f'--config.model.sample_duration={meta["sample_duration"]}', f'--config.model.w={meta["w"]}',
          f'--config.dataset.crop_size={meta["crop_size"]}']


def assert_matches_golden(arrays, modality):
  """The fixture's acceptance rule: >= 99.9% of grey levels equal, none off by more than 2,
  heatmap relative L2 error <= 1e-3, indices and labels equal."""
  meta, ref = _golden()
  assert [str(n) for n in arrays['name']] == [v[0] for v in meta['videos']]
  for i in range(len(meta['videos'])):
    u8 = np.rint(arrays['video'][i] * 128 + 127.5)
    np.testing.assert_array_equal(u8, arrays['video'][i] * 128 + 127.5)  # an exact grey level
    diff = np.abs(u8 - ref[f'{modality}/{i}/clip_u8'].astype(np.float64))
    assert (diff == 0).mean() >= 0.999, (modality, i, (diff == 0).mean())
    assert diff.max() <= 2, (modality, i, diff.max())
    heat, heat_ref = arrays['heatmap'][i], ref[f'{modality}/{i}/heatmap']
    assert heat.shape == heat_ref.shape
    assert np.linalg.norm(heat - heat_ref) / np.linalg.norm(heat_ref) <= 1e-3
    np.testing.assert_array_equal(arrays['indices'][i], ref[f'{modality}/{i}/indices'])
    assert arrays['label'][i] == ref[f'{modality}/{i}/label']


@pytest.mark.parametrize('modality', ['rgb', 'depth'])
def test_pipeline_reproduces_original_eval_clips(modality):
  arrays = dump.collect(_ntu_config(modality), 'valid', progress=False)
  assert_matches_golden(arrays, modality)
  # On this fixture the port is in fact bit-exact, which the tolerance above would hide.
  _, ref = _golden()
  for i in range(len(arrays['label'])):
    np.testing.assert_array_equal(np.rint(arrays['video'][i] * 128 + 127.5), ref[f'{modality}/{i}/clip_u8'])


def _run(script, *args):
  result = subprocess.run([sys.executable, str(REPO / 'scripts' / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_dump_clips_script_from_folders_rgb(tmp_path):
  out = tmp_path / 'rgb.npz'
  _run('dump_clips.py', '--config', 'configs/ntu.py', *_overrides('rgb'), '--phase', 'valid', '--out', str(out))
  with np.load(out) as z:
    arrays = {k: z[k] for k in z.files}
  assert arrays['video'].dtype == np.float32 and arrays['video'].shape[1:3] == (3, 64)
  assert_matches_golden(arrays, 'rgb')


def test_dump_clips_script_from_tfds_build_depth(tmp_path):
  tfds_dir = tmp_path / 'tfds'
  _run('prepare_tfds.py', '--config', 'configs/ntu.py', *_overrides('depth'), '--phase', 'valid',
       '--data-dir', str(tfds_dir))
  out = tmp_path / 'depth.npz'
  _run('dump_clips.py', '--config', 'configs/ntu.py', *_overrides('depth'), '--config.common.source=tfds',
       f'--config.common.tfds_data_dir={tfds_dir}', '--phase', 'valid', '--limit', '2', '--out', str(out))
  with np.load(out) as z:
    arrays = {k: z[k] for k in z.files}
  assert_matches_golden(arrays, 'depth')
  # The build kept the files' bytes: every record frame equals its file.
  from rgbd_jax.data import tfds_builder
  config = _ntu_config('depth')
  path = tfds_builder.build_dir(config, str(tfds_dir))
  record = tfds_builder.open_split(path, 'valid')[1]
  name = record['name'].decode() if isinstance(record['name'], bytes) else record['name']
  files = sorted((TINY / 'nturgb+d_depth_masked' / name[:-4]).iterdir())
  assert len(record['depth_frames']) == int(record['num_frames']) == len(files)
  assert all(b == f.read_bytes() for b, f in zip(record['depth_frames'], files))


def test_dump_clips_limit():
  arrays = dump.collect(_ntu_config('rgb'), 'valid', limit=1, progress=False)
  assert arrays['video'].shape[0] == 1 and list(arrays['name']) == ['S001C001P001R001A001_rgb']


def test_tfds_default_phases_are_the_split_files_present():
  from rgbd_jax.data import tfds_builder
  config = _ntu_config('rgb')
  assert tfds_builder.default_phases(config) == ['valid']
  assert tfds_builder.config_name(config) == 'ntu_cs_rgb'
  config.model.Network = 'FusionNet'
  assert tfds_builder.config_name(config) == 'ntu_cs_rgb_depth'
