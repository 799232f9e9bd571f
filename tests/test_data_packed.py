"""The packed training build (prepare_tfds.py --packed, dataset.packed): frames resized to
dataset.resize and re-encoded as JPEG; read back, loaded, and close to the clips of the original frames."""

import io
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import pipeline
from rgbd_jax.data import preflight
from rgbd_jax.data import sources
from rgbd_jax.data import tfds_builder
from rgbd_jax.data import transforms
from rgbd_jax.tools.benchmark import data as data_bench

REPO = pathlib.Path(__file__).resolve().parent.parent
NAMES = ('S001C001P001R001A001_rgb', 'S001C001P001R002A002_rgb', 'S001C001P001R003A003_rgb')
FRAMES = 20


def _write(root):
  """NTU layout: 640x480 camera-like JPEG frames (quality 75, as the NTU preparation writes them)."""
  rng = np.random.default_rng(0)
  for v, name in enumerate(NAMES):
    folder = root / 'Images' / name
    folder.mkdir(parents=True)
    for i in range(FRAMES):
      frame = data_bench.camera_like_frame(rng, (i + 7 * v) / FRAMES)
      Image.fromarray(frame).save(folder / f'{i + 1:06d}.jpg', quality=75)
  (root / 'splits').mkdir()
  lines = ''.join(f'{n} {FRAMES} {k}\n' for k, n in enumerate(NAMES))
  (root / 'splits' / 'train.txt').write_text(lines)
  (root / 'splits' / 'valid.txt').write_text(lines)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('packed')
  _write(root)
  c = configs.base_config()  # NTU: resize (320, 240), crop 224
  c.common.data = str(root)
  c.common.splits = str(root / 'splits')
  c.common.tfds_data_dir = str(root / 'tfds')
  c.common.num_workers = 0
  c.model.sample_duration = 16
  c.model.sample_size = 64
  packed = c.copy_and_resolve_references()
  packed.dataset.packed = True
  path = tfds_builder.prepare(packed, c.common.tfds_data_dir, workers=2)
  return c, packed, path


def test_packed_build_reads_back(built):
  config, packed, path = built
  assert path == tfds_builder.build_dir(packed, packed=True) and path.endswith('ntu_splits_rgb_packed320x240/1.0.0')
  assert tfds_builder.read_packed(path) == {'size': [320, 240], 'quality': tfds_builder.DEFAULT_QUALITY}
  assert [e.name for e, _ in tfds_builder.read_entries(path, 'train')] == list(NAMES)
  record = tfds_builder.open_split(path, 'train')[1]
  assert len(record['rgb_frames']) == int(record['num_frames']) == FRAMES
  for i in (0, FRAMES - 1):
    img = Image.open(io.BytesIO(record['rgb_frames'][i]))
    assert (img.format, img.mode, img.size) == ('JPEG', 'RGB', (320, 240))
    file = pathlib.Path(config.common.data) / 'Images' / NAMES[1] / f'{i + 1:06d}.jpg'
    expected = tfds_builder.encode_packed(transforms.decode(file.read_bytes(), str(file)), str(file), (320, 240),
                                          tfds_builder.DEFAULT_QUALITY)
    assert record['rgb_frames'][i] == expected  # the same bytes with 2 worker processes


def test_packed_loader_shapes_and_evaluation_source(built):
  config, packed, path = built
  train = clips.ClipLoader(packed, 'train')
  assert train.source.packed_size == (320, 240) and train.source.path == path
  sample = train(1, np.random.default_rng(0))
  assert sample['video'].shape == (16, 64, 64, 3) and sample['video'].dtype == np.uint8 and sample['mask']
  batch = next(pipeline.make_loader(packed, 'train', global_batch_size=2, process_index=0, process_count=1))
  assert batch['video'].shape == (2, 16, 64, 64, 3) and batch['video'].dtype == np.uint8
  # evaluation is not packed: the original frames, exactly as without dataset.packed
  assert isinstance(sources.make_source(packed, 'valid'), sources.FolderSource)
  np.testing.assert_array_equal(clips.ClipLoader(packed, 'valid')(2)['video'], clips.ClipLoader(config, 'valid')(2)['video'])
  # the preflight checks the training labels in the build, the evaluation frame files
  summary = preflight.run(packed, progress=False)
  assert summary['train']['check'] == 'labels' and summary['valid']['check'] == 'names'
  assert summary['train']['videos'] == summary['valid']['videos'] == len(NAMES)


@pytest.mark.parametrize('rotated', [0.0, 1.0])
def test_packed_training_clip_is_close_to_the_original(built, rotated):
  """Same draws (crop offset, flip, angle) from the same generator; no flip; rotation on the resized
  frame (NTU's resize is isotropic: the same map) or none. Mean |difference| in grey levels."""
  config, packed, _ = built
  config, packed = config.copy_and_resolve_references(), packed.copy_and_resolve_references()
  for c in (config, packed):
    c.dataset.flip = 0.0
    c.dataset.rotated = rotated
    c.model.sample_size = 224  # no final resize: the crop itself
  ours, ref = clips.ClipLoader(packed, 'train'), clips.ClipLoader(config, 'train')
  for i in range(len(NAMES)):
    a = ours.load_u8(i, np.random.default_rng(i))['rgb'].astype(np.int16)
    b = ref.load_u8(i, np.random.default_rng(i))['rgb'].astype(np.int16)
    diff = np.abs(a - b)
    print(f'video {i} rotated={rotated}: mean |diff| {diff.mean():.3f}, p99 {np.percentile(diff, 99)}, max {diff.max()}')
    assert diff.mean() < 1.5
    assert np.percentile(diff, 99) <= 10


def test_packed_errors(built, tmp_path):
  config, packed, _ = built
  with pytest.raises(ValueError, match='training split only'):
    tfds_builder.prepare(packed, str(tmp_path), ['train', 'valid'])
  no_dir = packed.copy_and_resolve_references()
  no_dir.common.tfds_data_dir = ''
  with pytest.raises(ValueError, match='set common.tfds_data_dir'):
    sources.make_source(no_dir, 'train')
  other = packed.copy_and_resolve_references()
  other.dataset.resize = (256, 256)
  with pytest.raises(FileNotFoundError, match='packed256x256'):
    sources.make_source(other, 'train')


def test_prepare_tfds_script_packed(built, tmp_path):
  config, _, _ = built
  out = tmp_path / 'tfds'
  cmd = [sys.executable, 'scripts/prepare_tfds.py', '--config', 'configs/ntu.py', f'--config.common.data={config.common.data}',
         f'--config.common.splits={config.common.splits}', '--packed', '--quality', '80', '--workers', '1',
         '--data-dir', str(out)]
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  path = out / 'rgbd_frames' / 'ntu_splits_rgb_packed320x240' / '1.0.0'
  assert tfds_builder.read_packed(str(path)) == {'size': [320, 240], 'quality': 80}
  assert not os.path.exists(out / 'rgbd_frames' / 'ntu_splits_rgb')  # only the packed build
