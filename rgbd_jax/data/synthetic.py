"""A small synthetic RGB-D action dataset in the NTU-RGBD layout.

Each video shows one textured object on a cluttered static background moving
in one of six ways; no single frame tells the classes apart, only the motion:

    0 right, 1 left, 2 down, 3 up        (translation, constant depth)
    4 approach, 5 retreat                (growing / shrinking, depth falling / rising)

Appearance (shape, colours, texture, size), background, start position, travel
distance, speed profile and video length are random; the scene's lighting and
the camera's oblique view of the floor are the same for all (so a network that
pools each frame's features over the image still sees where the object is). Layout, as NTU-RGBD after the original's
preparation:

    <data>/Images/<name>/%06d.jpg                                  RGB JPEG, 1-based
    <data>/nturgb+d_depth_masked/<name[:-4]>/MDepth-%08d.png        16-bit depth (0 = masked)
    <splits>/{train,valid}.txt                                     `name frames label`

Horizontal flips swap classes 0 and 1: train on it with `dataset.flip = 0`.
Generation runs in worker processes with a progress bar; each video is a pure
function of (seed, split, number), so the worker count does not matter.
`ensure_dataset` is safe to call from several processes at once.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import logging
import multiprocessing
import os
import shutil

import cv2
import ml_collections
import numpy as np
from PIL import Image
import tqdm

CLASSES = ('right', 'left', 'down', 'up', 'approach', 'retreat')
NUM_CLASSES = len(CLASSES)
_MARKER = '.synthetic_complete.json'
GENERATOR_VERSION = 2  # bump when the rendering changes: an older dataset is then reported, not reused
_SPLITS = ('train', 'valid')


def video_name(split: str, number: int) -> str:
  return f'syn{split[0]}{number:06d}_rgb'  # NTU-style: the depth folder drops the '_rgb'


def _params(config: ml_collections.ConfigDict) -> dict:
  videos = tuple(int(v) for v in config.dataset.synthetic_videos)
  frames = tuple(int(v) for v in config.dataset.synthetic_frames)
  size = tuple(int(v) for v in config.dataset.synthetic_frame_size)
  if len(videos) != 2 or min(videos) < 1:
    raise ValueError(f'dataset.synthetic_videos must be (train, valid) counts >= 1, got {videos}')
  if len(frames) != 2 or frames[0] > frames[1] or frames[0] <= 16:
    raise ValueError(f'dataset.synthetic_frames must be (min, max) with 16 < min <= max '
                     f'(shorter videos are dropped by the loader), got {frames}')
  if len(size) != 2 or min(size) < 16:
    raise ValueError(f'dataset.synthetic_frame_size must be (width, height) >= 16, got {size}')
  return {'videos': videos, 'frames': frames, 'frame_size': size,
          'seed': int(config.dataset.synthetic_seed), 'classes': list(CLASSES), 'version': GENERATOR_VERSION}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A smooth colour field with a few static blobs, float32 (h, w, 3) in [0, 255]."""
  coarse = rng.uniform(20, 235, (3, 4, 3)).astype(np.float32)
  bg = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  for _ in range(rng.integers(2, 6)):
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(0.05, 0.15) * min(h, w)
    blob = ((x - cx) ** 2 + (y - cy) ** 2) <= r * r
    bg[blob] = rng.uniform(0, 255, 3)
  return np.clip(bg + rng.standard_normal(bg.shape, dtype=np.float32) * 6, 0, 255)


def render_video(seed: int, split: str, number: int, frames: int, size: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
  """(label, rgb (T, H, W, 3) uint8, depth (T, H, W) uint16) of one video, vectorised over frames."""
  w, h = size
  rng = np.random.default_rng([seed, _SPLITS.index(split), number])
  label = number % NUM_CLASSES
  t = np.linspace(0.0, 1.0, frames, dtype=np.float32)[:, None, None]
  # Speed profile: linear or eased, so speed is no cue either.
  if rng.uniform() < 0.5:
    t = t * t * (3 - 2 * t)
  base_r = rng.uniform(0.14, 0.22) * min(h, w)
  aspect = rng.uniform(0.7, 1.4)
  travel = rng.uniform(0.35, 0.55)
  cx0, cy0 = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
  scale = np.ones_like(t)
  cx, cy = np.full_like(t, cx0), np.full_like(t, cy0)
  if label < 4:
    sign = 1.0 if label in (0, 2) else -1.0
    span = travel * (w if label < 2 else h)
    offset = sign * span * (t - 0.5)
    if label < 2:
      cx = cx0 + offset
    else:
      cy = cy0 + offset
    depth_mm = np.full_like(t, rng.uniform(1800, 3500))
  else:
    grow = rng.uniform(1.8, 2.4)
    k = t if label == 4 else 1.0 - t
    scale = 1.0 / grow + (1.0 - 1.0 / grow) * k
    base_r = base_r * 1.25
    far = rng.uniform(2600, 4000)
    depth_mm = far / (scale * grow)
  rx, ry = base_r * scale * aspect ** 0.5, base_r * scale / aspect ** 0.5

  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  u, v = (x[None] - cx) / rx, (y[None] - cy) / ry                   # object coordinates (T, H, W)
  rect = rng.uniform() < 0.5
  inside = (np.maximum(np.abs(u), np.abs(v)) <= 0.85) if rect else (u * u + v * v <= 1.0)
  # Texture that moves with the object: stripes or a checkerboard in object coordinates.
  freq = rng.uniform(2.0, 4.0)
  if rng.uniform() < 0.5:
    pattern = np.floor(freq * (u + 0.3 * v)) % 2 == 0
  else:
    pattern = (np.floor(freq * u) + np.floor(freq * v)) % 2 == 0
  colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
  colours[1] = 255 - colours[0] + rng.normal(0, 20, 3)  # keep the two texture colours apart

  bg = _background(rng, h, w)
  obj = np.where(pattern[..., None], colours[0], colours[1])
  rgb = np.where(inside[..., None], obj, bg[None])
  # The scene's lighting and the camera's oblique view are the same in every video: light grows
  # warmer to the right and bluer downwards, the floor comes closer downwards. A frame shows where
  # the object is (which every class visits), a clip which way it goes; a network whose per-frame
  # features are pooled over the image can still see position through them.
  xn, yn = x / (w - 1), y / (h - 1)
  light = np.stack([0.55 + 0.9 * xn, np.full_like(xn, 1.0), 0.55 + 0.9 * yn], axis=-1)
  rgb *= light[None]
  rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * 3
  rgb = np.clip(rgb, 0, 255).astype(np.uint8)

  bump = np.sqrt(np.clip(1.0 - u * u - v * v, 0, 1)) * 120.0       # a rounded surface
  d = depth_mm - bump - 500.0 * (yn - 0.5) + 300.0 * (xn - 0.5)
  d = d + rng.standard_normal(u.shape, dtype=np.float32) * 4
  dep = np.where(inside, np.clip(d, 500, 8000), 0).astype(np.uint16)
  return label, rgb, dep


def _write_video(task: tuple) -> None:
  root, seed, split, number, frames, size = task
  _, rgb, dep = render_video(seed, split, number, frames, size)
  name = video_name(split, number)
  rgb_dir = os.path.join(root, 'Images', name)
  dep_dir = os.path.join(root, 'nturgb+d_depth_masked', name[:-4])
  os.makedirs(rgb_dir, exist_ok=True)
  os.makedirs(dep_dir, exist_ok=True)
  for i in range(frames):  # one encoded file per frame is the dataset format itself
    Image.fromarray(rgb[i]).save(os.path.join(rgb_dir, f'{i + 1:06d}.jpg'), quality=90)
    ok, png = cv2.imencode('.png', dep[i])
    if not ok:
      raise RuntimeError(f'PNG encoding failed for {dep_dir} frame {i + 1}')
    with open(os.path.join(dep_dir, f'MDepth-{i + 1:08d}.png'), 'wb') as f:
      f.write(png.tobytes())


def split_entries(params: dict) -> dict[str, list[tuple[str, int, int]]]:
  """(name, frames, label) per split, in video order; cheap (nothing is rendered)."""
  lo, hi = params['frames']
  out = {}
  for split, count in zip(_SPLITS, params['videos']):
    lengths = np.random.default_rng([params['seed'], _SPLITS.index(split), 1 << 30]).integers(lo, hi + 1, count)
    out[split] = [(video_name(split, n), int(lengths[n]), n % NUM_CLASSES) for n in range(count)]
  return out


def generate(root: str, params: dict, *, workers: int | None = None, progress: bool = True) -> None:
  """Writes every video's frames under `root`, in worker processes, with a progress bar."""
  tasks = [(root, params['seed'], split, n, frames, tuple(params['frame_size']))
           for split, entries in split_entries(params).items() for n, (_, frames, _) in enumerate(entries)]
  workers = workers or max(1, min(os.cpu_count() or 1, 8))
  with tqdm.tqdm(total=len(tasks), desc='synthetic RGB-D videos', unit='video', disable=not progress) as bar:
    if workers == 1:
      for task in tasks:
        _write_video(task)
        bar.update()
      return
    ctx = multiprocessing.get_context('spawn')  # no fork: the caller may hold JAX/grain threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
      for _ in pool.map(_write_video, tasks, chunksize=16):
        bar.update()


def _write_splits(splits_dir: str, params: dict) -> None:
  os.makedirs(splits_dir, exist_ok=True)
  for split, entries in split_entries(params).items():
    path = os.path.join(splits_dir, f'{split}.txt')
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
      f.writelines(f'{name} {frames} {label}\n' for name, frames, label in entries)
    os.replace(tmp, path)


def _generated(data: str, params: dict) -> bool:
  marker = os.path.join(data, _MARKER)
  if not os.path.isfile(marker):
    return False
  with open(marker) as f:
    found = json.load(f)
  if found != json.loads(json.dumps(params)):
    raise ValueError(f'{data} holds a synthetic dataset made with other parameters ({found}); '
                     f'expected {params}: choose another common.data or delete it')
  return True


def _splits_present(splits_dir: str) -> bool:
  return all(os.path.isfile(os.path.join(splits_dir, f'{s}.txt')) for s in _SPLITS)


def ensure_dataset(config: ml_collections.ConfigDict, *, workers: int | None = None, progress: bool = True) -> str:
  """Generates the dataset at config.common.data (splits at config.common.splits) unless it is there.

  Several processes may call this at once: one generates (into a temporary
  folder, renamed into place when complete) while the others wait on a lock.
  An existing complete dataset is never regenerated. Returns config.common.data.
  """
  data, splits_dir = config.common.data, config.common.splits
  if not data or not splits_dir:
    raise ValueError('the synthetic dataset needs config.common.data and config.common.splits')
  data, splits_dir = os.path.abspath(data).rstrip('/'), os.path.abspath(splits_dir)
  params = _params(config)
  if _generated(data, params) and _splits_present(splits_dir):
    return data
  os.makedirs(os.path.dirname(data), exist_ok=True)
  with open(data + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not _generated(data, params):
      if os.path.exists(data):
        if os.listdir(data):
          raise ValueError(f'{data} exists and is not a synthetic dataset: remove it or choose another common.data')
        os.rmdir(data)
      tmp = f'{data}.tmp-{os.getpid()}'
      shutil.rmtree(tmp, ignore_errors=True)
      logging.warning('generating the synthetic RGB-D dataset (%d videos, about %.0f MB) in %s: '
                      'move it with --config.common.data=DIR, remove it with rm -rf %s',
                      sum(params['videos']), _approx_megabytes(params), data, data)
      generate(tmp, params, workers=workers, progress=progress)
      with open(os.path.join(tmp, _MARKER), 'w') as f:
        json.dump(params, f)
      os.rename(tmp, data)
    if not _splits_present(splits_dir):
      _write_splits(splits_dir, params)
  return data


def _approx_megabytes(params: dict) -> float:
  """Rough size on disk: ~0.26 MB per video at the default 80x60 frames (measured: 542 MB for 2100)."""
  w, h = params['frame_size']
  frames = sum(params['frames']) / 2
  return sum(params['videos']) * frames * w * h * 0.0000018
