"""Your own dataset: videos -> frame folders (`extract_frames`) -> split files (`make_splits`).

The frames are written where a dataset's layout reads them (`rgbd_jax.data.layouts`), numbered
as that dataset numbers them: for 'Custom' `<data>/rgb/<name>/%06d.jpg` (0-based), NTU
`Images/<name>/%06d.jpg` (1-based), Jester `<name>/%05d.jpg` (1-based), ... A video's name is its
path under the videos folder without the extension (`left/clip01` for `videos/left/clip01.mp4`),
so class subfolders carry over. Extraction is parallel (processes), resumable (a video's frames go
to a temporary folder renamed into place when complete; finished videos are skipped) and shows a
progress bar; a video that cannot be read is reported at the end with its error, the others done.

`make_splits` writes `train.txt`, `valid.txt` (`name frames label`, frames counted on disk, a
folder with gaps refused by name) and `classes.txt` (one class name per line, label order) from
either the class subfolders or a CSV file.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import logging
import os
import shutil

import ml_collections
import numpy as np
from PIL import Image
import tqdm

from rgbd_jax import configs
from rgbd_jax.data import class_names as class_names_lib
from rgbd_jax.data import layouts
from rgbd_jax.data import splits
from rgbd_jax.data import video as video_lib

TMP_SUFFIX = '.partial'


def layout_config(data: str, dataset: str = 'Custom') -> ml_collections.ConfigDict:
  """A config that only says where `dataset`'s frames live under `data` (for the layout)."""
  config = configs.base_config()
  config.common.dataset = dataset
  config.common.data = data
  layouts.layout(config)  # an unknown dataset name fails here, naming the known ones
  return config


def find_videos(root: str) -> list[tuple[str, str]]:
  """(name, path) of every video file under `root`, name = relative path without extension, sorted."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f'videos folder not found: {root}')
  out = []
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for f in sorted(files):
      if os.path.splitext(f)[1].lower() in video_lib.VIDEO_EXTENSIONS:
        path = os.path.join(folder, f)
        name = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, '/')
        out.append((name, path))
  if not out:
    raise ValueError(f'{root}: no video files ({", ".join(video_lib.VIDEO_EXTENSIONS)})')
  names = [n for n, _ in out]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise ValueError(f'{root}: videos that differ only in their extension would share a frame folder: {twice[:5]}')
  return out


@dataclasses.dataclass(frozen=True)
class _Job:
  name: str
  path: str
  data: str
  dataset: str
  stream: str
  quality: int


def _extract_one(job: _Job) -> tuple[str, int, str]:
  """(name, frames written, '' or the error) of one video."""
  lay = layouts.layout(layout_config(job.data, job.dataset))
  final = lay.folder(job.name, job.stream)
  tmp = final.rstrip(os.sep) + TMP_SUFFIX
  shutil.rmtree(tmp, ignore_errors=True)  # a previous run's half-written folder
  try:
    os.makedirs(tmp)
    n = 0
    for i, frame in enumerate(video_lib.iter_frames(job.path)):
      file = os.path.join(tmp, lay.frame(i, job.stream))
      os.makedirs(os.path.dirname(file), exist_ok=True)
      Image.fromarray(frame).save(file, quality=job.quality)
      n += 1
    os.makedirs(os.path.dirname(final.rstrip(os.sep)) or '.', exist_ok=True)
    os.replace(tmp, final)
    return job.name, n, ''
  except (OSError, ValueError) as e:
    shutil.rmtree(tmp, ignore_errors=True)
    return job.name, 0, str(e)


def extract_frames(videos: str, data: str, *, dataset: str = 'Custom', stream: str = 'rgb',
                   workers: int | None = None, quality: int = 75, progress: bool = True) -> dict:
  """Frames of every video under `videos` into `data` in `dataset`'s layout; returns a summary.

  Summary: 'videos' (found), 'done' (extracted now), 'skipped' (already there), 'frames'
  (written now), 'failed' [(video path, error)].
  """
  if stream not in layouts.STREAMS:
    raise ValueError(f'stream must be one of {layouts.STREAMS}, got {stream!r}')
  found = find_videos(videos)
  lay = layouts.layout(layout_config(data, dataset))
  todo, skipped = [], 0
  for name, path in found:
    if os.path.isdir(lay.folder(name, stream)):
      skipped += 1
    else:
      todo.append(_Job(name, path, data, dataset, stream, int(quality)))
  summary = {'videos': len(found), 'done': 0, 'skipped': skipped, 'frames': 0, 'failed': []}
  paths = dict(found)
  bar = tqdm.tqdm(total=len(todo), desc='extract', unit='video', disable=not progress, dynamic_ncols=True)
  workers = max(1, int(workers or os.cpu_count() or 1))
  try:
    if workers == 1:
      results = map(_extract_one, todo)
    else:
      pool = concurrent.futures.ProcessPoolExecutor(workers)
      results = (f.result() for f in concurrent.futures.as_completed([pool.submit(_extract_one, j) for j in todo]))
    for name, n, error in results:
      bar.update(1)
      if error:
        summary['failed'].append((paths[name], error))
        logging.warning('%s: %s', paths[name], error)
      else:
        summary['done'] += 1
        summary['frames'] += n
  finally:
    bar.close()
    if workers > 1:
      pool.shutdown()
  return summary


# ---------------------------------------------------------------------------------- splits

@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  label: int
  phase: str | None  # 'train' / 'valid', or None: drawn by make_splits


def entries_from_folders(data: str, dataset: str = 'Custom', stream: str = 'rgb'
                         ) -> tuple[list[Entry], list[str]]:
  """Class per subfolder: `<stream folder>/<class>/<video>/frames`; classes in name order."""
  lay = layouts.layout(layout_config(data, dataset))
  root = os.path.dirname(lay.folder('x', stream).rstrip(os.sep))
  if not os.path.isdir(root):
    raise FileNotFoundError(f'{root}: no {stream} frames folder (run scripts/extract_frames.py first)')
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                   and not d.endswith(TMP_SUFFIX))
  entries = []
  for label, cls in enumerate(classes):
    videos = sorted(v for v in os.listdir(os.path.join(root, cls))
                    if os.path.isdir(os.path.join(root, cls, v)) and not v.endswith(TMP_SUFFIX))
    entries += [Entry(f'{cls}/{v}', label, None) for v in videos]
  if not entries:
    raise ValueError(f'{root}: no <class>/<video>/ frame folders')
  return entries, classes


_PHASES = {'train': 'train', 'training': 'train', 'valid': 'valid', 'val': 'valid', 'validation': 'valid',
           'test': 'valid'}


def entries_from_csv(path: str) -> tuple[list[Entry], list[str] | None]:
  """Rows `name,label[,split]` (a header row is recognised by a non-numeric label named 'label').

  Labels are integers (class names then come from elsewhere: None) or class names (numbered in name
  order); split is train/valid (val, validation, test count as valid), else drawn at random.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'CSV file not found: {path}')
  with open(path, newline='', encoding='utf-8') as f:
    rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(f), 1) if r and any(c.strip() for c in r)]
  if rows and rows[0][1][1:2] == ['label']:
    rows = rows[1:]
  raw = []
  for n, row in rows:
    if len(row) not in (2, 3):
      raise ValueError(f'{path}:{n}: expected "name,label[,split]", got {",".join(row)!r}')
    phase = None
    if len(row) == 3 and row[2]:
      if row[2].lower() not in _PHASES:
        raise ValueError(f'{path}:{n}: split must be train or valid, got {row[2]!r}')
      phase = _PHASES[row[2].lower()]
    raw.append((n, row[0].rstrip('/'), row[1], phase))
  if not raw:
    raise ValueError(f'{path}: no rows')
  numeric = all(label.lstrip('-').isdigit() for _, _, label, _ in raw)
  classes = None if numeric else sorted({label for _, _, label, _ in raw})
  index = {c: i for i, c in enumerate(classes or [])}
  entries = []
  for n, name, label, phase in raw:
    value = int(label) if numeric else index[label]
    if value < 0:
      raise ValueError(f'{path}:{n}: negative label {value}')
    entries.append(Entry(name, value, phase))
  return entries, classes


def make_splits(data: str, out: str, *, csv_path: str = '', dataset: str = 'Custom',
                streams: tuple[str, ...] = ('rgb',), valid_fraction: float = 0.2, seed: int = 0,
                classes_file: str = '') -> dict:
  """Writes `<out>/train.txt`, `valid.txt` and `classes.txt`; returns a summary.

  Entries come from `csv_path`, else from the class subfolders of the first stream. Every video's
  frames are counted in each of `streams` (a frame folder with gaps is an error naming it; rgb and
  depth counts must agree). Videos without a split are drawn per class, `valid_fraction` of each
  class (at least one when the class has two or more videos) into valid, with `seed`.
  """
  if csv_path:
    entries, classes = entries_from_csv(csv_path)
  else:
    entries, classes = entries_from_folders(data, dataset, streams[0])
  num = max(e.label for e in entries) + 1
  if classes_file:
    classes = list(class_names_lib.read(classes_file))
  if classes is None:
    classes = [f'class {i}' for i in range(num)]
  if num > len(classes):
    raise ValueError(f'labels go up to {num - 1}, but {len(classes)} class names are known')
  lay = layouts.layout(layout_config(data, dataset))
  counts, problems = {}, []
  for e in tqdm.tqdm(entries, desc='count frames', unit='video', leave=False):
    per_stream = {}
    for stream in streams:
      try:
        per_stream[stream] = len(video_lib.list_frame_folder(lay.folder(e.name, stream)))
      except (OSError, ValueError) as err:
        problems.append(f'{e.name}: {err}')
    if len(set(per_stream.values())) > 1:
      problems.append(f'{e.name}: ' + ', '.join(f'{s} has {n} frames' for s, n in per_stream.items()))
    elif per_stream and len(per_stream) == len(streams):
      counts[e.name] = next(iter(per_stream.values()))
  if problems:
    shown = '\n  '.join(problems[:20]) + ('\n  ...' if len(problems) > 20 else '')
    raise ValueError(f'{len(problems)} video(s) cannot go into the splits:\n  {shown}')
  rng = np.random.default_rng(seed)
  phase = {e.name: e.phase for e in entries}
  for label in range(num):
    free = [e.name for e in entries if e.label == label and e.phase is None]
    if not free:
      continue
    k = int(round(valid_fraction * len(free)))
    if valid_fraction > 0 and len(free) >= 2:
      k = min(max(k, 1), len(free) - 1)
    chosen = set(rng.permutation(free)[:k].tolist())
    for name in free:
      phase[name] = 'valid' if name in chosen else 'train'
  os.makedirs(out, exist_ok=True)
  written = {}
  for p in ('train', 'valid'):
    rows = [e for e in entries if phase[e.name] == p]
    path = os.path.join(out, f'{p}.txt')
    with open(path, 'w', encoding='utf-8') as f:
      f.writelines(f'{e.name} {counts[e.name]} {e.label}\n' for e in rows)
    written[p] = (path, len(rows))
  class_names_lib.write(os.path.join(out, class_names_lib.SPLITS_FILE), classes)
  short = [n for n, c in counts.items() if c <= splits.MIN_FRAMES_EXCLUSIVE]
  if short:
    logging.warning('%d video(s) have %d frames or fewer and will be left out by the loader (as the '
                    'original does): %s', len(short), splits.MIN_FRAMES_EXCLUSIVE, ', '.join(short[:5]))
  return {'train': written['train'], 'valid': written['valid'], 'classes': classes, 'num_classes': len(classes),
          'short': short}
