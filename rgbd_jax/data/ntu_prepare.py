"""NTU-RGBD preparation as the original did it: frames of the raw RGB videos, cropped around the
subject found in the masked depth maps, plus the cross-subject / cross-view split files.

For frame k (1-based) of `nturgb+d_rgb/<name>.avi` (name = S...A..._rgb):
1. the mask `nturgb+d_depth_masked/<name[:-4]>/MDepth-%08d.png` % k, read as OpenCV reads it by
   default (8-bit, 3 channels), times 255 in uint8 (it wraps: any depth >= 256 mm becomes non-zero),
   eroded 3x3, dilated 10x10, to grey; contours with area > 500, their rotated-rectangle centres
   truncated to integers, the minimum x and the minimum y;
2. that point scaled from the mask's size to the video's (`int(W / w_mask * x)`), and a window of
   half the video's width and height placed with its top-left a quarter-size before it (clamped to
   the frame);
3. the window saved as `Images/<name>/%06d.jpg` % k (Pillow JPEG, its default quality 75).
Where no contour is large enough (the original crashes) the window is centred, with a warning.

Split files `dataset_splits/@CS|@CV/{train,valid}.txt` hold `name frames label`, label = action
number - 1; cross-subject trains on the original's 20 performers, cross-view validates on camera 1.
The frame count written is the number of frames actually extracted (the original wrote the
container's frame count, which can disagree with what decodes).

Resumable: each video is written into a temporary folder renamed into place when complete, and
videos whose folder exists are skipped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import logging
import multiprocessing
import os
import re
import shutil

import cv2
import numpy as np
from PIL import Image
import tqdm

# Performers of the cross-subject training set (the original's list).
CS_TRAIN_PERFORMERS = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
MIN_CONTOUR_AREA = 500
_NAME = re.compile(r'S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})_rgb$')


@dataclasses.dataclass(frozen=True)
class Video:
  name: str     # S001C001P001R001A001_rgb
  frames: int
  label: int
  camera: int
  performer: int


def parse_name(name: str) -> tuple[int, int, int]:
  """(label, camera, performer) of an NTU video name."""
  m = _NAME.match(name)
  if not m:
    raise ValueError(f'{name!r} is not an NTU-RGBD video name (SsssCcccPpppRrrrAaaa_rgb)')
  _, camera, performer, _, action = (int(g) for g in m.groups())
  return action - 1, camera, performer


def subject_centre(mask_path: str) -> tuple[int, int, tuple[int, int]] | None:
  """(x, y) of the subject in the mask's pixels and the mask's (w, h); None without a large contour."""
  mask = cv2.imread(mask_path)  # default flags: 8-bit BGR, as the original reads it
  if mask is None:
    raise FileNotFoundError(f'depth mask missing or unreadable: {mask_path}')
  mask = mask * np.uint8(255)
  mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
  mask = cv2.dilate(mask, np.ones((10, 10), np.uint8))
  grey = cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY)
  contours, _ = cv2.findContours(grey, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  centres = [cv2.minAreaRect(c)[0] for c in contours if cv2.contourArea(c) > MIN_CONTOUR_AREA]
  size = (mask.shape[1], mask.shape[0])
  if not centres:
    return None
  c = np.array(centres).astype(np.intp)
  return int(c[:, 0].min()), int(c[:, 1].min()), size


def crop_window(frame_size: tuple[int, int], centre: tuple[int, int] | None,
                mask_size: tuple[int, int]) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of the half-size window of a (W, H) frame around the mask point."""
  w, h = frame_size
  if centre is None:
    x, y = w // 2, h // 2
  else:
    x, y = int(w / mask_size[0] * centre[0]), int(h / mask_size[1] * centre[1])
  cw, ch = w // 2, h // 2
  left, top = max(x - cw // 2, 0), max(y - ch // 2, 0)
  return left, top, min(left + cw, w), min(top + ch, h)


def extract_video(video_path: str, masks_root: str, out_root: str, quality: int = 75) -> Video | None:
  """Writes one video's frames; returns its split entry, or None when it was already done."""
  name = os.path.splitext(os.path.basename(video_path))[0]
  label, camera, performer = parse_name(name)
  final = os.path.join(out_root, 'Images', name)
  if os.path.isdir(final):
    return Video(name, len(os.listdir(final)), label, camera, performer)
  tmp = f'{final}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  cap = cv2.VideoCapture(video_path)
  if not cap.isOpened():
    raise ValueError(f'cannot open video {video_path}')
  count, fallbacks = 0, 0
  try:
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      count += 1
      mask_path = os.path.join(masks_root, name[:-4], f'MDepth-{count:08d}.png')
      found = subject_centre(mask_path)
      if found is None:
        fallbacks += 1
        box = crop_window((frame.shape[1], frame.shape[0]), None, (1, 1))
      else:
        box = crop_window((frame.shape[1], frame.shape[0]), found[:2], found[2])
      left, top, right, bottom = box
      crop = cv2.cvtColor(frame[top:bottom, left:right], cv2.COLOR_BGR2RGB)
      Image.fromarray(crop).save(os.path.join(tmp, f'{count:06d}.jpg'), quality=quality)
  finally:
    cap.release()
  if count == 0:
    shutil.rmtree(tmp, ignore_errors=True)
    raise ValueError(f'no frame could be read from {video_path}')
  if fallbacks:
    logging.warning('%s: %d of %d frames had no contour with area > %d in the depth mask; '
                    'their window was centred', name, fallbacks, count, MIN_CONTOUR_AREA)
  os.rename(tmp, final)
  return Video(name, count, label, camera, performer)


def _extract(task):
  video_path, masks_root, out_root, quality, skip_bad = task
  try:
    return extract_video(video_path, masks_root, out_root, quality), None
  except (FileNotFoundError, ValueError) as e:
    if not skip_bad:
      raise
    return None, f'{video_path}: {e}'


def write_splits(out_root: str, videos: list[Video]) -> dict[str, str]:
  """dataset_splits/@CS and @CV train/valid files, videos sorted by name."""
  videos = sorted(videos, key=lambda v: v.name)
  rules = {'@CS': lambda v: v.performer in CS_TRAIN_PERFORMERS, '@CV': lambda v: v.camera != 1}
  written = {}
  for protocol, is_train in rules.items():
    folder = os.path.join(out_root, 'dataset_splits', protocol)
    os.makedirs(folder, exist_ok=True)
    for phase, keep in (('train', True), ('valid', False)):
      path = os.path.join(folder, f'{phase}.txt')
      with open(path, 'w') as f:
        f.writelines(f'{v.name} {v.frames} {v.label}\n' for v in videos if is_train(v) == keep)
      written[f'{protocol}/{phase}'] = path
  return written


def prepare(data_root: str, out_root: str | None = None, *, workers: int | None = None,
            quality: int = 75, limit: int | None = None, skip_bad: bool = False, progress: bool = True) -> dict:
  """Extracts every `nturgb+d_rgb/*.avi` under data_root (in parallel) and writes the split files."""
  out_root = out_root or data_root
  videos = sorted(glob.glob(os.path.join(data_root, 'nturgb+d_rgb', '*.avi')))
  if not videos:
    raise FileNotFoundError(f'no video found: {os.path.join(data_root, "nturgb+d_rgb", "*.avi")}')
  if limit:
    videos = videos[:limit]
  masks = os.path.join(data_root, 'nturgb+d_depth_masked')
  if not os.path.isdir(masks):
    raise FileNotFoundError(f'depth mask folder not found: {masks}')
  os.makedirs(os.path.join(out_root, 'Images'), exist_ok=True)
  tasks = [(v, masks, out_root, quality, skip_bad) for v in videos]
  workers = workers or os.cpu_count() or 1
  done, bad = [], []
  with tqdm.tqdm(total=len(tasks), desc='NTU videos', unit='video', disable=not progress) as bar:
    if workers == 1:
      results = map(_extract, tasks)
    else:
      ctx = multiprocessing.get_context('spawn')
      pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx)
      results = pool.map(_extract, tasks)
    try:
      for video, error in results:
        if video is None:
          bad.append(error)
        else:
          done.append(video)
        bar.update()
    finally:
      if workers != 1:
        pool.shutdown()
  for error in bad:
    logging.warning('skipped: %s', error)
  if bad:
    logging.warning('%d of %d videos skipped', len(bad), len(tasks))
  return {'videos': len(done), 'skipped': len(bad), 'splits': write_splits(out_root, done)}
