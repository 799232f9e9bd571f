"""The synthetic RGB-D dataset: layout, classes that only motion tells apart, safe concurrent creation."""

import concurrent.futures
import multiprocessing
import os
import pathlib

import numpy as np
from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import splits
from rgbd_jax.data import synthetic


def make_config(root, videos=(12, 6)):
  c = configs.base_config()
  c.common.dataset = 'Synthetic'
  c.common.data = str(root / 'syn')
  c.common.splits = str(root / 'syn' / 'dataset_splits' / '@synthetic')
  c.dataset.synthetic_videos = videos
  c.dataset.synthetic_frames = (17, 22)
  c.dataset.synthetic_frame_size = (48, 40)
  return c


def test_layout_splits_and_frames(tmp_path):
  c = make_config(tmp_path)
  synthetic.ensure_dataset(c, workers=1, progress=False)
  for phase, count in (('train', 12), ('valid', 6)):
    records = splits.read_split(os.path.join(c.common.splits, f'{phase}.txt'))
    assert len(records) == count
    assert sorted({r.label for r in records}) == list(range(synthetic.NUM_CLASSES))
    for r in records:
      assert 17 <= r.frames <= 22 and r.name.endswith('_rgb')
      rgb = sorted(os.listdir(os.path.join(c.common.data, 'Images', r.name)))
      dep = sorted(os.listdir(os.path.join(c.common.data, 'nturgb+d_depth_masked', r.name[:-4])))
      assert rgb == [f'{i:06d}.jpg' for i in range(1, r.frames + 1)]
      assert dep == [f'MDepth-{i:08d}.png' for i in range(1, r.frames + 1)]
  first = os.path.join(c.common.data, 'Images', records[0].name, '000001.jpg')
  depth = os.path.join(c.common.data, 'nturgb+d_depth_masked', records[0].name[:-4], 'MDepth-00000001.png')
  assert Image.open(first).mode == 'RGB' and Image.open(first).size == (48, 40)
  assert Image.open(depth).mode == 'I;16' and Image.open(depth).size == (48, 40)
  # The loader reads it as NTU (both streams).
  c.model.sample_duration, c.model.sample_size = 16, 32
  c.dataset.resize, c.dataset.crop_size = (48, 40), 32
  for t in 'MK':
    c.dataset.type = t
    assert clips.ClipLoader(c, 'valid')(0)['video'].shape == (16, 32, 32, 3)


def _track(label, seed=5, number=None):
  """Per-frame centroid and size of the object (from the depth mask) and its mean depth."""
  number = label + 6 * 3 if number is None else number
  got, rgb, dep = synthetic.render_video(seed, 'train', number, 24, (80, 60))
  assert got == label and rgb.shape == (24, 60, 80, 3) and dep.dtype == np.uint16
  mask = dep > 0
  y, x = np.mgrid[0:60, 0:80]
  area = mask.sum(axis=(1, 2))
  cx = (mask * x).sum(axis=(1, 2)) / area
  cy = (mask * y).sum(axis=(1, 2)) / area
  depth = (dep * mask).sum(axis=(1, 2)) / area
  return cx, cy, area, depth


@pytest.mark.parametrize('label', range(6))
def test_each_class_is_its_motion(label):
  cx, cy, area, depth = _track(label)
  dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
  grow = area[-1] / area[0]
  if label == 0:
    assert dx > 10 and abs(dy) < 2
  elif label == 1:
    assert dx < -10 and abs(dy) < 2
  elif label == 2:
    assert dy > 8 and abs(dx) < 2
  elif label == 3:
    assert dy < -8 and abs(dx) < 2
  elif label == 4:
    assert grow > 2 and depth[-1] < depth[0] * 0.7
  else:
    assert grow < 0.5 and depth[-1] > depth[0] * 1.4


def test_single_frames_do_not_tell_the_direction():
  """A class's first frame looks like another class's last one: positions/sizes overlap across classes."""
  starts = {label: [] for label in range(6)}
  for label in range(6):
    for k in range(8):
      cx, cy, area, _ = _track(label, seed=k)
      starts[label].append((cx[0], cx[-1], area[0], area[-1]))
  right, left = np.array(starts[0]), np.array(starts[1])
  # x positions of "right" clips span the x positions where "left" clips start and end
  assert right[:, 0].min() < left[:, 1].max() and right[:, 1].max() > left[:, 0].min()
  near, far = np.array(starts[4]), np.array(starts[5])
  assert near[:, 3].min() < far[:, 2].max()  # an approach can end smaller than a retreat starts


def test_rendering_is_deterministic_and_varied():
  a = synthetic.render_video(1, 'valid', 3, 20, (40, 32))
  b = synthetic.render_video(1, 'valid', 3, 20, (40, 32))
  c = synthetic.render_video(1, 'valid', 9, 20, (40, 32))
  np.testing.assert_array_equal(a[1], b[1])
  assert a[0] == c[0] and not np.array_equal(a[1], c[1])  # same class, other appearance


def test_existing_dataset_is_not_regenerated_and_mismatch_is_an_error(tmp_path):
  c = make_config(tmp_path, videos=(6, 6))
  synthetic.ensure_dataset(c, workers=1, progress=False)
  marker = os.path.join(c.common.data, synthetic._MARKER)
  stamp = os.stat(marker).st_mtime_ns
  frame = os.path.join(c.common.data, 'Images', synthetic.video_name('train', 0), '000001.jpg')
  frame_stamp = os.stat(frame).st_mtime_ns
  synthetic.ensure_dataset(c, workers=1, progress=False)
  assert os.stat(marker).st_mtime_ns == stamp and os.stat(frame).st_mtime_ns == frame_stamp
  os.remove(os.path.join(c.common.splits, 'valid.txt'))  # split files are restored without regenerating
  synthetic.ensure_dataset(c, workers=1, progress=False)
  assert os.path.isfile(os.path.join(c.common.splits, 'valid.txt')) and os.stat(frame).st_mtime_ns == frame_stamp
  c.dataset.synthetic_videos = (7, 6)
  with pytest.raises(ValueError, match='other parameters'):
    synthetic.ensure_dataset(c, workers=1, progress=False)


def test_foreign_folder_and_bad_parameters(tmp_path):
  c = make_config(tmp_path)
  os.makedirs(c.common.data)
  open(os.path.join(c.common.data, 'mine.txt'), 'w').close()
  with pytest.raises(ValueError, match='is not a synthetic dataset'):
    synthetic.ensure_dataset(c, workers=1, progress=False)
  c.dataset.synthetic_frames = (10, 20)
  with pytest.raises(ValueError, match='16 < min'):
    synthetic.ensure_dataset(c, workers=1, progress=False)


def _ensure(root):
  c = make_config(pathlib.Path(root), videos=(8, 4))
  return synthetic.ensure_dataset(c, workers=1, progress=False)


def test_concurrent_calls_make_one_complete_dataset(tmp_path):
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
    results = list(pool.map(_ensure, [str(tmp_path)] * 2))
  assert results[0] == results[1]
  leftovers = [p for p in os.listdir(tmp_path) if '.tmp-' in p]
  assert not leftovers
  records = splits.read_split(os.path.join(tmp_path, 'syn', 'dataset_splits', '@synthetic', 'train.txt'))
  assert len(records) == 8
  assert all(os.path.isdir(os.path.join(tmp_path, 'syn', 'Images', r.name)) for r in records)
