"""Speed of the input pipeline in training mode: clips/s per core, per stage, with worker processes,
from the original JPEG frames and from the packed build, beside the original's loader.

    python scripts/benchmark.py data [--frames 64] [--videos 8] [--clips 10] [--rounds 3] [--workers 1,2]
                                     [--original PATH] [--no-fast-decode] [--json out.json]

It writes its own NTU-layout videos of 640x480 JPEG frames (camera-like: smooth shading, edges,
sensor noise, quality 75, as the NTU preparation saves them), the packed training build of them
(`prepare_tfds.py --packed`: 320x240 JPEG, quality 90), and times training clips with the NTU
augmentations (64 frames, random crop 224 of the 320x240 resize, flip 0.5, rotation in [-10, 10)
with probability 0.5; `--sample-size` 224):

* per stage, one process, no workers: JPEG decode, geometry (rotation, resize + crop, flip,
  resize to sample_size) and everything else (sampling, reading, gathering the clip);
* the grain pipeline (`pipeline.make_loader`) in-process (reader threads) and with 1 and 2 worker
  processes (`--workers`);
* with `--original PATH` (a MotionRGBD checkout): the original's own dataset class
  (`lib/datasets/NTU.py`, training phase), which also computes the FRP heatmap on the host
  (ours computes it on the device, in the step). Its evaluation clip of the same video is also
  compared with ours (grey levels, heatmap).

Every figure comes from a fresh process per round, the kinds alternating within a round (ours from
the JPEG frames, from the packed build, the original), over `--rounds` rounds: medians and spreads
(min-max). "Per core" divides by CPU seconds (user + system, of the main process and its worker
processes), not wall time, so that a machine shared with other jobs gives figures that still say
what a core does; wall-clock rates are reported beside them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import dynamic_image
from rgbd_jax.data import pipeline
from rgbd_jax.data import transforms

FIRST = 'S001C001P001R001A001_rgb'
KINDS = {'jpeg': 'original JPEG frames (exact geometry and pixels)',
         'fast': 'original JPEG frames, dataset.fast_decode (DCT-domain downscaling; not exact)',
         'packed': 'packed build (320x240 JPEG q90; rotation on the resized frame)'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--frames', type=int, default=64, help='frames per video (64: every sampled frame distinct)')
  parser.add_argument('--videos', type=int, default=8, help='videos in the dataset (links to the same frames)')
  parser.add_argument('--clips', type=int, default=10, help='timed training clips per kind and round')
  parser.add_argument('--rounds', type=int, default=3, help='rounds (a fresh process per kind and round)')
  parser.add_argument('--workers', default='0,1,2',
                      help='grain worker processes to time the pipeline with (0: in-process, common.prefetch '
                           'reader threads; "": skip)')
  parser.add_argument('--sample-size', type=int, default=224, help='model.sample_size')
  parser.add_argument('--fast-decode', action=argparse.BooleanOptionalAction, default=True,
                      help='also time dataset.fast_decode on the JPEG frames (the same geometry; the pixels '
                           'compared with the exact ones)')
  parser.add_argument('--original', default=None,
                      help="a MotionRGBD checkout: time its dataset class (lib/datasets/NTU.py) beside ours")
  parser.add_argument('--workdir', default=None, help='where to write the frames (default: a temporary folder)')
  parser.add_argument('--json', default=None, help='also write the figures to this JSON file')


# ----------------------------------------------------------------------------------- test frames

def camera_like_frame(rng: np.random.Generator, t: float) -> np.ndarray:
  """640x480 RGB with smooth shading, a few sharp-edged moving shapes and sensor noise."""
  h, w = 480, 640
  coarse = rng.uniform(30, 220, (6, 8, 3)).astype(np.float32)
  img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
  for k in range(6):
    x0 = int((80 + 90 * k + 200 * t) % (w - 80))
    y0 = 60 + 55 * k
    cv2.rectangle(img, (x0, y0), (x0 + 60 + 7 * k, y0 + 90), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
    cv2.circle(img, (w - x0 - 40, y0 + 30), 25 + 3 * k, tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
  img += rng.normal(0, 4, img.shape).astype(np.float32)
  return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: str, frames: int, videos: int) -> None:
  """NTU layout: `Images/<name>/%06d.jpg`, `splits/train.txt` and `splits/valid.txt` (the same list)."""
  rng = np.random.default_rng(0)
  folder = os.path.join(root, 'Images', FIRST)
  os.makedirs(folder, exist_ok=True)
  for i in range(frames):
    Image.fromarray(camera_like_frame(rng, i / frames)).save(os.path.join(folder, f'{i + 1:06d}.jpg'), quality=75)
  names = [FIRST] + [f'S001C001P001R{k:03d}A001_rgb' for k in range(2, videos + 1)]
  for name in names[1:]:  # the other videos share the frames (a link), their bytes are read again
    link = os.path.join(root, 'Images', name)
    if not os.path.exists(link):
      os.symlink(folder, link)
  os.makedirs(os.path.join(root, 'splits'), exist_ok=True)
  for phase in ('train', 'valid'):
    with open(os.path.join(root, 'splits', f'{phase}.txt'), 'w') as f:
      f.writelines(f'{n} {frames} 0\n' for n in names)


def bench_config(root: str, sample_size: int, kind: str = 'jpeg'):
  """The NTU defaults (resize 320x240, crop 224, 64 frames, flip 0.5, rotation 0.5 in [-10, 10))."""
  c = configs.base_config()
  c.common.data = root
  c.common.splits = os.path.join(root, 'splits')
  c.common.tfds_data_dir = os.path.join(root, 'tfds')
  c.common.num_workers = 0
  c.model.sample_size = sample_size
  c.dataset.fast_decode = kind == 'fast'
  c.dataset.packed = kind == 'packed'
  return c


def prepare(root: str, frames: int, videos: int, sample_size: int) -> None:
  """The frames and the packed training build."""
  from rgbd_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
  write_dataset(root, frames, videos)
  tfds_builder.prepare(bench_config(root, sample_size, 'packed'), os.path.join(root, 'tfds'), workers=1)


# ------------------------------------------------------------------------------- CPU time, rounds

def _process_tree_cpu() -> float:
  """User + system CPU seconds of this process and its live child processes (grain workers), from /proc."""
  tick = os.sysconf('SC_CLK_TCK')
  me = os.getpid()
  total = 0.0
  for pid in os.listdir('/proc'):
    if not pid.isdigit():
      continue
    try:
      with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:  # gone meanwhile
      continue
    if int(pid) == me or int(fields[1]) == me:  # fields[1]: the parent's pid
      total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
  return total


def _fresh_process(fn: Callable[..., dict], *args) -> dict:
  """`fn(*args)` in a new process (spawned: nothing inherited, its own caches and allocator)."""
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
    return pool.submit(fn, *args).result()


def _spread(values: list[float]) -> dict[str, float]:
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


# ------------------------------------------------------------------------------------ our rounds

def stage_round(root: str, sample_size: int, kind: str, n_clips: int, seed: int) -> dict:
  """One process, no workers: CPU seconds per training clip, split into decode, geometry and the rest."""
  cv2.setNumThreads(1)  # one core
  loader = clips.ClipLoader(bench_config(root, sample_size, kind), 'train')
  spent = {'decode': 0.0, 'geometry': 0.0}

  def timed(stage, fn):
    def wrapper(*args, **kwargs):
      start = time.process_time()
      try:
        return fn(*args, **kwargs)
      finally:
        spent[stage] += time.process_time() - start
    return wrapper
  # this process only: the loader's own calls, timed where they happen
  transforms.decode = timed('decode', transforms.decode)
  transforms.FrameTransform.__call__ = timed('geometry', transforms.FrameTransform.__call__)
  loader(0, np.random.default_rng([seed, 1 << 20]))  # warm-up: imports, caches, the build's reader
  spent.update(decode=0.0, geometry=0.0)
  heat = 0.0
  cpu, wall = time.process_time(), time.perf_counter()
  for k in range(n_clips):
    clip = loader(k % len(loader), np.random.default_rng([seed, k]))['video']
    start = time.process_time()
    dynamic_image.heatmap(clip, 10)  # for reference only: the step computes it on the device
    heat += time.process_time() - start
  cpu, wall = time.process_time() - cpu - heat, time.perf_counter() - wall
  return {'cpu_s': cpu / n_clips, 'decode_s': spent['decode'] / n_clips, 'geometry_s': spent['geometry'] / n_clips,
          'other_s': (cpu - spent['decode'] - spent['geometry']) / n_clips, 'wall_s': wall / n_clips,
          'host_heatmap_s': heat / n_clips}


def _wait_idle(timeout: float = 60.0, interval: float = 0.3) -> float:
  """Waits until this process and its workers stop using CPU (workers blocked on full buffers);
  returns their CPU seconds then."""
  deadline = time.perf_counter() + timeout
  last = _process_tree_cpu()
  while time.perf_counter() < deadline:
    time.sleep(interval)
    now = _process_tree_cpu()
    if now - last < 0.02:
      return now
    last = now
  return last


def pipeline_round(root: str, sample_size: int, kind: str, workers: int, n_clips: int, seed: int) -> dict:
  """The grain training pipeline with `workers` processes: CPU (all processes) and wall time per clip.

  CPU: from one idle moment (every buffer full, workers blocked) to the next, around the clips
  taken in between; as many clips are then ready at both ends, so the work done in the window is
  exactly the clips taken. Wall: the clips taken after the buffers were drained (steady state,
  every worker busy), over the time they took.
  """
  config = bench_config(root, sample_size, kind)
  config.common.num_workers = workers
  config.common.seed = seed
  # more than the clips that can be ready: per worker, its output queue, its reader thread's
  # buffer and one finished clip waiting to be queued (in-process: the reader threads' buffer)
  drain = max(workers, 1) * (2 * int(config.common.prefetch) + 2)
  it = pipeline.make_loader(config, 'train', global_batch_size=1, process_index=0, process_count=1)
  try:
    next(it)  # start-up: worker processes, imports
    cpu = _wait_idle()
    for _ in range(drain):
      next(it)
    wall = time.perf_counter()
    for _ in range(n_clips):
      batch = next(it)
      assert batch['video'].dtype == np.uint8
    wall = time.perf_counter() - wall
    cpu = _wait_idle() - cpu
  finally:
    it.close()
  return {'cpu_s': cpu / (drain + n_clips), 'wall_s': wall / n_clips}


# ------------------------------------------------------------------------------- the original's

def _original_stand_ins():
  """Modules the original's lib/datasets/base.py imports but this comparison does not need, or that
  need not be installed (torchvision): minimal equivalents of what it calls."""
  import torch  # pylint: disable=g-import-not-at-top

  class Compose:
    def __init__(self, fns):
      self.fns = fns

    def __call__(self, x):
      for fn in self.fns:
        x = fn(x)
      return x

  class ToTensor:  # torchvision's, for an (H, W, C) ndarray: CHW tensor, uint8 scaled to [0, 1]
    def __call__(self, pic):
      t = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
      return t.float().div(255) if t.dtype == torch.uint8 else t

  class Grayscale:  # torchvision's rgb_to_grayscale on a (..., 3, H, W) tensor
    def __init__(self, num_output_channels=1):
      del num_output_channels

    def __call__(self, img):
      r, g, b = img.unbind(dim=-3)
      return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)

  tv = types.ModuleType('torchvision')
  tv.transforms = types.ModuleType('torchvision.transforms')
  tv.transforms.Compose, tv.transforms.ToTensor, tv.transforms.Grayscale = Compose, ToTensor, Grayscale
  tv.set_image_backend = lambda name: None
  sys.modules.setdefault('torchvision', tv)
  sys.modules.setdefault('torchvision.transforms', tv.transforms)
  for name in ('pandas',):
    try:
      __import__(name)
    except ImportError:
      sys.modules[name] = types.ModuleType(name)
  if not hasattr(np, 'int0'):  # removed in NumPy 2; the original's depth code uses it
    np.int0 = np.intp


def fast_vs_exact(root: str, sample_size: int, n_clips: int) -> dict:
  """Training clips from the same draws (crop, flip, rotation), `dataset.fast_decode` against the exact
  decode: how far apart their grey levels are (uint8, all clips' pixels)."""
  exact = clips.ClipLoader(bench_config(root, sample_size, 'jpeg'), 'train')
  fast = clips.ClipLoader(bench_config(root, sample_size, 'fast'), 'train')
  diffs = []
  for k in range(n_clips):
    a = exact(k % len(exact), np.random.default_rng([7, k]))['video'].astype(np.int16)
    b = fast(k % len(fast), np.random.default_rng([7, k]))['video'].astype(np.int16)
    diffs.append(np.abs(a - b).ravel())
  d = np.concatenate(diffs)
  return {'mean_abs_grey_levels': float(d.mean()), 'p99_abs_grey_levels': float(np.percentile(d, 99)),
          'max_abs_grey_levels': float(d.max()), 'within_2_levels': float((d <= 2).mean())}


def original_dataset(path: str, root: str, sample_size: int, phase: str):
  """The original's NTUData (lib/datasets/NTU.py) over the benchmark's videos, modality rgb."""
  import importlib  # pylint: disable=g-import-not-at-top
  folder = os.path.join(path, 'lib', 'datasets')
  if not os.path.isfile(os.path.join(folder, 'NTU.py')):
    raise FileNotFoundError(f'--original: {folder}/NTU.py not found (expected the MotionRGBD repository)')
  _original_stand_ins()
  package = types.ModuleType('motionrgbd_datasets')  # the package without its __init__ (which imports all)
  package.__path__ = [folder]
  sys.modules['motionrgbd_datasets'] = package
  ntu = importlib.import_module('motionrgbd_datasets.NTU')
  c = bench_config(root, sample_size)
  d = c.dataset
  args = argparse.Namespace(
      data=root, sample_duration=int(c.model.sample_duration), sample_size=sample_size, w=int(c.model.w),
      resize=str(tuple(d.resize)), crop_size=int(d.crop_size), flip=float(d.flip), rotated=float(d.rotated),
      angle=str(tuple(d.angle)), Blur=bool(d.Blur), batch_size=1, nprocs=1, Network='I3DWTrans', type='M')
  return ntu.NTUData(args, os.path.join(root, 'splits', f'{phase}.txt'), 'rgb', phase=phase)


def original_round(path: str, root: str, sample_size: int, n_clips: int, seed: int) -> dict:
  """The original's training clips, one core (torch threads 1): CPU and wall seconds per clip."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  cv2.setNumThreads(1)
  dataset = original_dataset(path, root, sample_size, 'train')
  np.random.seed(seed)  # its draws come from the global generators
  random.seed(seed)
  dataset[0]  # warm-up
  cpu, wall = time.process_time(), time.perf_counter()
  for k in range(n_clips):
    dataset[k % len(dataset)]
  return {'cpu_s': (time.process_time() - cpu) / n_clips, 'wall_s': (time.perf_counter() - wall) / n_clips}


def original_eval_check(path: str, root: str, sample_size: int) -> dict:
  """The original's evaluation clip of the first video against ours (uint8 clip, host heatmap)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  clip, heat, _, _ = original_dataset(path, root, sample_size, 'valid')[0]
  ref_u8 = np.rint(clip.numpy().transpose(1, 2, 3, 0).astype(np.float64) * 128 + 127.5)  # (T, S, S, 3)
  ours = clips.ClipLoader(bench_config(root, sample_size), 'valid').load_u8(0)['rgb']
  ref_heat = heat.numpy()[0]
  ours_heat = dynamic_image.heatmap(ours, 10)
  return {'max_abs_grey_levels': float(np.abs(ours - ref_u8).max()),
          'heatmap_rel_l2': float(np.linalg.norm(ours_heat - ref_heat) / max(np.linalg.norm(ref_heat), 1e-12))}


# ------------------------------------------------------------------------------------------ run

def run(args: argparse.Namespace) -> int:
  """`scripts/benchmark.py data`: prints the figures (and writes --json); exit status 0."""
  measure(args)
  return 0


def measure(args: argparse.Namespace) -> dict:
  workers = [int(w) for w in str(args.workers).split(',') if w.strip()]
  kinds = ['jpeg'] + (['fast'] if args.fast_decode else []) + ['packed']
  root = args.workdir or tempfile.mkdtemp(prefix='rgbd_bench_')
  try:
    prepare(root, args.frames, args.videos, args.sample_size)
    results: dict[str, Any] = {
        'cpu_count': os.cpu_count(), 'cores_allowed': len(os.sched_getaffinity(0)),
        'load_average_1min': os.getloadavg()[0], 'rounds': args.rounds, 'clips_per_round': args.clips,
        'clip': f'training, {configs.base_config().model.sample_duration} frames of 640x480 JPEG (q75) -> '
                f'{args.sample_size}x{args.sample_size}, NTU augmentations (crop, flip 0.5, rotation 0.5)',
        'kinds': {k: KINDS[k] for k in kinds}}
    raw: dict[str, list[dict]] = {}

    def record(key, value):
      raw.setdefault(key, []).append(value)
    for r in range(args.rounds):
      seed = 1000 + r
      for kind in kinds:  # alternating: each kind sees the machine as it is in this round
        record(f'stages/{kind}', _fresh_process(stage_round, root, args.sample_size, kind, args.clips, seed))
        if args.original and kind == 'jpeg':
          record('original', _fresh_process(original_round, args.original, root, args.sample_size, args.clips, seed))
      for kind in kinds:
        for w in workers:
          record(f'pipeline/{kind}/{w}', _fresh_process(pipeline_round, root, args.sample_size, kind, w,
                                                         args.clips, seed))
    results['stages'] = {k.split('/')[1]: _summarise(v, stages=True) for k, v in raw.items() if k.startswith('stages/')}
    results['pipeline'] = {}
    for key, values in raw.items():
      if key.startswith('pipeline/'):
        _, kind, w = key.split('/')
        results['pipeline'].setdefault(kind, {})[w] = _summarise(values)
    if 'fast' in kinds:
      results['fast_vs_exact'] = _fresh_process(fast_vs_exact, root, args.sample_size, min(args.clips, 4))
    if args.original:
      results['original'] = _summarise(raw['original'])
      results['original_eval_clip_vs_ours'] = _fresh_process(original_eval_check, args.original, root,
                                                             args.sample_size)
    _print(results)
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(results, f, indent=1)
    return results
  finally:
    if args.workdir is None:
      shutil.rmtree(root, ignore_errors=True)


def _summarise(values: list[dict], stages: bool = False) -> dict:
  """Medians and spreads over rounds: clips/s per core (1 / CPU s per clip), wall clips/s, stage ms."""
  out = {'clips_per_s_per_core': _spread([1 / v['cpu_s'] for v in values]),
         'clips_per_s_wall': _spread([1 / v['wall_s'] for v in values]),
         'cpu_s_per_clip': _spread([v['cpu_s'] for v in values])}
  if stages:
    for stage in ('decode', 'geometry', 'other', 'host_heatmap'):
      out[f'{stage}_ms_per_clip'] = _spread([1000 * v[f'{stage}_s'] for v in values])
  return out


def _fmt(s: dict, digits: int = 1) -> str:
  return f'{s["median"]:.{digits}f} [{s["min"]:.{digits}f}-{s["max"]:.{digits}f}]'


def _print(results: dict) -> None:
  print(f'{results["clip"]}; {results["cores_allowed"]} cores, load average {results["load_average_1min"]:.1f} '
        f'at the start; {results["rounds"]} rounds x {results["clips_per_round"]} clips, median [min-max]')
  print('per core = clips per CPU second (all processes); wall = clips per second of elapsed time')
  for kind, s in results['stages'].items():
    print(f'  {KINDS[kind]}')
    print(f'    loader only : {_fmt(s["clips_per_s_per_core"])} clips/s per core (wall {_fmt(s["clips_per_s_wall"])}); '
          f'ms/clip: decode {_fmt(s["decode_ms_per_clip"], 0)}, geometry {_fmt(s["geometry_ms_per_clip"], 0)}, '
          f'other {_fmt(s["other_ms_per_clip"], 0)} (host heatmap, not run: {_fmt(s["host_heatmap_ms_per_clip"], 0)})')
    for w, p in results['pipeline'].get(kind, {}).items():
      what = 'in-process  ' if w == '0' else f'{w} worker{"s" if w != "1" else " "}   '
      print(f'    {what}: {_fmt(p["clips_per_s_per_core"])} clips/s per core, '
            f'{_fmt(p["clips_per_s_wall"])} clips/s wall')
  if 'fast_vs_exact' in results:
    f = results['fast_vs_exact']
    print(f'  fast_decode against the exact clips (same draws): mean |grey level diff| {f["mean_abs_grey_levels"]:.2f}, '
          f'99th percentile {f["p99_abs_grey_levels"]:.0f}, max {f["max_abs_grey_levels"]:.0f}, '
          f'{100 * f["within_2_levels"]:.1f}% within 2 levels')
  if 'original' in results:
    o = results['original']
    print(f'  the original\'s loader (lib/datasets/NTU.py, training, heatmap on the host), one process: '
          f'{_fmt(o["clips_per_s_per_core"], 2)} clips/s per core (wall {_fmt(o["clips_per_s_wall"], 2)})')
    e = results['original_eval_clip_vs_ours']
    print(f'  its evaluation clip vs ours: max |grey level diff| {e["max_abs_grey_levels"]:.0f}, '
          f'heatmap rel. L2 {e["heatmap_rel_l2"]:.1e}')
