"""Speed of the evaluation input pipeline per clip: ours, the original-style path, and fast decode.

    python scripts/benchmark.py data [--frames 64] [--videos 6] [--workers 2] [--json out.json]

It writes its own NTU-layout videos of 640x480 JPEG frames (camera-like: smooth
shading, edges, sensor noise, quality 75, as the NTU preparation saves them) and
times, on one core:

* `original-style`: a faithful re-implementation of the original loader's
  structure (per frame: decode, warpAffine by 0 degrees, resize, crop, resize,
  float64 normalisation, torch tensors; the dynamic image as a per-window torch
  loop), written for this benchmark;
* `ours`: `ClipLoader` as the training/evaluation pipeline runs it (bit-identical
  clips; the benchmark checks that against the original-style output);
* `ours, fast decode`: with `dataset.fast_decode=True` (JPEG DCT-domain downscaling);

plus the breakdown of our time (decode, resize+crop, heatmap, rest) and the
throughput of the grain pipeline with worker processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import dynamic_image
from rgbd_jax.data import pipeline
from rgbd_jax.data import sampling
from rgbd_jax.data import transforms

NAME = 'S001C001P001R001A001_rgb'


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--frames', type=int, default=64, help='frames per video (64: every sampled frame distinct)')
  parser.add_argument('--videos', type=int, default=6, help='videos for the worker throughput run')
  parser.add_argument('--repeats', type=int, default=3, help='timed clips per one-core measurement (best is kept)')
  parser.add_argument('--workers', type=int, default=2, help='grain worker processes for the throughput run (0: skip)')
  parser.add_argument('--sample-size', type=int, default=224, help='model.sample_size')
  parser.add_argument('--skip-original', action='store_true', help='do not time the original-style path')
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
  rng = np.random.default_rng(0)
  folder = os.path.join(root, 'Images', NAME)
  os.makedirs(folder, exist_ok=True)
  for i in range(frames):
    Image.fromarray(camera_like_frame(rng, i / frames)).save(os.path.join(folder, f'{i + 1:06d}.jpg'), quality=75)
  names = [NAME] + [f'S001C001P001R{k:03d}A001_rgb' for k in range(2, videos + 1)]
  for name in names[1:]:  # the other videos share the frames (a link), their bytes are read again
    link = os.path.join(root, 'Images', name)
    if not os.path.exists(link):
      os.symlink(folder, link)
  os.makedirs(os.path.join(root, 'splits'), exist_ok=True)
  with open(os.path.join(root, 'splits', 'valid.txt'), 'w') as f:
    f.writelines(f'{n} {frames} 0\n' for n in names)


def bench_config(root: str, sample_size: int):
  c = configs.base_config()  # the NTU defaults: resize (320, 240), crop 224, 64 frames, w 10
  c.common.data = root
  c.common.splits = os.path.join(root, 'splits')
  c.common.num_workers = 0
  c.model.sample_size = sample_size
  return c


# ------------------------------------------------------------------- original-style reference path

def original_style_clip(config, folder: str, indices: np.ndarray):
  """The original loader's per-frame structure (decode, rotate by 0, resize, crop, resize, float64
  normalisation, torch tensors, per-window dynamic image), written for this benchmark."""
  import torch  # only the reference path needs it
  resize = tuple(config.dataset.resize)
  size = config.model.sample_size
  params = transforms.clip_params(config, False, None)
  w = config.model.w
  frames = []
  for a in indices:
    img = np.asarray(Image.open(os.path.join(folder, f'{int(a) + 1:06d}.jpg')))
    h, wd = img.shape[:2]
    img = cv2.warpAffine(img, cv2.getRotationMatrix2D((wd / 2, h / 2), 0, 1.0), (wd, h))
    img = Image.fromarray(img).resize(resize).crop(params.crop)
    img = np.array(img.resize((size, size)))
    x = (img - 127.5) / 128
    frames.append(torch.from_numpy(x.transpose(2, 0, 1).copy()).view(3, size, size, 1))
  dyn, stat = [], []
  erode = cv2.getStructuringElement(cv2.MORPH_RECT, (2, 2))
  dilate = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
  for i in range(len(frames)):
    window = frames[i:i + w]
    n = len(window)
    re = torch.zeros(window[0].size())
    for j, f in enumerate(window, start=1):
      re += f * float(2 * j - n - 1)
    re = torch.relu(re)
    re -= torch.min(re)
    re = re / torch.max(re) if torch.max(re) != 0 else re / (torch.max(re) + 0.00001)
    re = re.squeeze(-1)
    grey = (0.2989 * re[0] + 0.587 * re[1] + 0.114 * re[2]).unsqueeze(0)
    s = torch.where(grey > torch.mean(grey), grey, torch.zeros_like(grey))
    s = cv2.dilate(cv2.erode(np.asarray(s.squeeze()), erode), dilate)
    s -= np.min(s)
    s = s / np.max(s) if np.max(s) != 0 else s / (np.max(s) + 0.00001)
    dyn.append(grey)
    stat.append(torch.from_numpy(s).unsqueeze(0))
  t = len(frames)
  zeros = torch.zeros(w - 1, size, size)
  garr = torch.cat((zeros, torch.cat(dyn)))[:t]
  stat = torch.cat((zeros, torch.cat(stat)))[:t]
  heat = ((garr + stat) * stat).unsqueeze(0)
  clip = torch.cat(frames, dim=3).float().permute(0, 3, 1, 2)
  return clip.numpy(), heat.numpy()


# ------------------------------------------------------------------------------------------ timing

def _best(fn, repeats: int) -> tuple[float, object]:
  out, best = None, float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - t0)
  return best, out


def breakdown(config, loader: clips.ClipLoader, repeats: int) -> dict[str, float]:
  """Where our per-clip time goes: read+decode, resize/crop (the per-frame transform), heatmap, rest."""
  record = loader.source.records[0]
  indices = sampling.sample_indices(record.frames, config.model.sample_duration)
  unique, inverse = np.unique(indices, return_inverse=True)
  params = transforms.clip_params(config, False, None)
  draft = tuple(config.dataset.resize) if config.dataset.fast_decode else None
  t_read, data = _best(lambda: loader.source.read(record, unique, 'rgb'), repeats)
  t_decode, images = _best(lambda: [transforms.decode(d, w, draft) for d, w in data], repeats)
  transform = transforms.FrameTransform(config, params)
  t_resize, frames = _best(lambda: [transform(img, 'bench') for img in images], repeats)
  t_gather, clip = _best(lambda: np.stack(frames)[inverse], repeats)
  t_heat, _ = _best(lambda: dynamic_image.heatmap(clip, config.model.w), repeats)
  t_norm, _ = _best(lambda: transforms.normalise(clip), repeats)
  return {'read': t_read, 'decode': t_decode, 'resize_crop': t_resize, 'heatmap': t_heat,
          'rest (gather, normalise)': t_gather + t_norm}


def worker_throughput(config, workers: int, videos: int) -> float:
  """Seconds per clip of the grain pipeline with `workers` processes (start-up excluded)."""
  c = config.copy_and_resolve_references()
  c.common.num_workers = workers
  it = pipeline.make_loader(c, 'valid', global_batch_size=1, process_index=0, process_count=1)
  next(it)  # start-up: worker processes, imports
  t0 = time.perf_counter()
  count = sum(1 for _ in it)
  return (time.perf_counter() - t0) / max(count, 1)


def run(args: argparse.Namespace) -> int:
  """`scripts/benchmark.py data`: prints the figures (and writes --json); exit status 0."""
  measure(args)
  return 0


def measure(args: argparse.Namespace) -> dict:
  cv_threads = cv2.getNumThreads()
  cv2.setNumThreads(1)  # one core: no OpenCV worker threads
  torch_threads = None
  if not args.skip_original:
    import torch
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
  root = args.workdir or tempfile.mkdtemp(prefix='rgbd_bench_')
  try:
    write_dataset(root, args.frames, args.videos)
    config = bench_config(root, args.sample_size)
    loader = clips.ClipLoader(config, 'valid')
    fast_config = config.copy_and_resolve_references()
    fast_config.dataset.fast_decode = True
    fast_loader = clips.ClipLoader(fast_config, 'valid')
    loader(0), fast_loader(0)  # warm caches and imports

    results = {'cpu_count': os.cpu_count(), 'load_average_1min': os.getloadavg()[0],
               'frames_per_video': args.frames, 'sample_size': args.sample_size,
               'clip': f'{config.model.sample_duration} frames of 640x480 JPEG -> {args.sample_size}x{args.sample_size}'}
    runs = {'ours': lambda: loader(0), 'fast': lambda: fast_loader(0)}
    if not args.skip_original:
      indices = sampling.sample_indices(args.frames, config.model.sample_duration)
      folder = os.path.join(root, 'Images', NAME)
      runs['original'] = lambda: original_style_clip(config, folder, indices)
    # Interleaved, best of `repeats` each: a busy machine slows all three alike.
    best, outputs = {k: float('inf') for k in runs}, {}
    for _ in range(args.repeats):
      for key, fn in runs.items():
        t0 = time.perf_counter()
        outputs[key] = fn()
        best[key] = min(best[key], time.perf_counter() - t0)
    ours, fast = outputs['ours'], outputs['fast']
    results['ours_s_per_clip'] = best['ours']
    results['fast_decode_s_per_clip'] = best['fast']
    u8 = lambda v: np.rint(v * 128 + 127.5)
    diff = np.abs(fast['video'].astype(np.float64) - ours['video'])
    results['fast_decode_vs_exact'] = {'equal_fraction': float((diff == 0).mean()),
                                       'mean_abs_grey_levels': float(diff.mean()), 'max_abs': float(diff.max())}
    if 'original' in runs:
      clip_ref, heat_ref = outputs['original']
      results['original_style_s_per_clip'] = best['original']
      results['speedup_exact'] = best['original'] / best['ours']
      results['speedup_fast_decode'] = best['original'] / best['fast']
      ref_u8 = u8(clip_ref.transpose(1, 2, 3, 0))
      heat = dynamic_image.heatmap(ours['video'], config.model.w)  # the step computes it on the device
      results['exact_vs_original_style'] = {
          'max_abs_grey_levels': float(np.abs(ours['video'] - ref_u8).max()),
          'heatmap_rel_l2': float(np.linalg.norm(heat - heat_ref[0]) / max(np.linalg.norm(heat_ref[0]), 1e-12))}
    results['ours_breakdown_s'] = breakdown(config, loader, args.repeats)
    results['fast_decode_breakdown_s'] = breakdown(fast_config, fast_loader, args.repeats)
    if args.workers > 0:
      results[f'pipeline_{args.workers}_workers_s_per_clip'] = worker_throughput(config, args.workers, args.videos)
      results['pipeline_in_process_s_per_clip'] = worker_throughput(config, 0, args.videos)
    _print(results)
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(results, f, indent=1)
    return results
  finally:
    cv2.setNumThreads(cv_threads)
    if torch_threads is not None:
      import torch
      torch.set_num_threads(torch_threads)
    if args.workdir is None:
      shutil.rmtree(root, ignore_errors=True)


def _print(results: dict) -> None:
  print(f'evaluation clip: {results["clip"]} (video of {results["frames_per_video"]} frames); '
        f'{results["cpu_count"]} cores, load average {results["load_average_1min"]:.1f} at the start')
  if 'original_style_s_per_clip' in results:
    print(f'  original-style loader, one core : {results["original_style_s_per_clip"]:.3f} s/clip')
  print(f'  ours (identical), one core      : {results["ours_s_per_clip"]:.3f} s/clip'
        + (f'   x{results["speedup_exact"]:.2f}' if 'speedup_exact' in results else ''))
  print(f'  ours, fast decode, one core     : {results["fast_decode_s_per_clip"]:.3f} s/clip'
        + (f'   x{results["speedup_fast_decode"]:.2f}' if 'speedup_fast_decode' in results else ''))
  if 'exact_vs_original_style' in results:
    e = results['exact_vs_original_style']
    print(f'  ours vs original-style: max |grey level diff| {e["max_abs_grey_levels"]:.0f}, '
          f'heatmap rel. L2 {e["heatmap_rel_l2"]:.1e}')
  f = results['fast_decode_vs_exact']
  print(f'  fast decode vs exact: {100 * f["equal_fraction"]:.1f}% equal, mean |diff| '
        f'{f["mean_abs_grey_levels"]:.2f}, max {f["max_abs"]:.0f} grey levels')
  for key in ('ours_breakdown_s', 'fast_decode_breakdown_s'):
    parts = ', '.join(f'{k} {v:.3f}' for k, v in results[key].items())
    print(f'  {key.replace("_s", "").replace("_", " ")} (s): {parts}')
  for key, value in results.items():
    if key.startswith('pipeline_'):
      print(f'  {key.replace("_", " ")}: {value:.3f}')
