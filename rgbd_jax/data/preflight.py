"""Checks of a dataset before the first training step, so that a bad input fails at once.

Without them a label outside the model's classes, or a missing or corrupt frame
file in a video that happens to be sampled late, shows up hours into a run (or,
for a label, never: it is a silently wrong target). Here:

* `check_labels`: every entry of a split has a label in [0, num_classes);
  always an error, naming the file, line and value (a wrong class count is a
  configuration error, not a bad video).
* `check_frames`: every frame file of every usable video, for every stream the
  config reads, exists (`full=False`: names only, one `os.listdir` per
  folder), or also decodes, in a supported mode, with one mode and size per
  video and stream (`full=True`, a thread pool with a progress bar). All bad
  videos are collected, then either an error lists them or, with
  `dataset.skip_bad_videos`, a warning counts them and they are returned.
* `run`: both, for the training phases, as `dataset.verify_frames` says
  ('names', 'full' or 'off'); returns a summary to log.

Where a phase reads a TFDS build (`common.source == 'tfds'`, or training with
`dataset.packed`) only the labels are checked: the build holds the frames, and
writing it checked that every file was there.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time

import ml_collections
import tqdm

from rgbd_jax import configs
from rgbd_jax.data import layouts
from rgbd_jax.data import sources
from rgbd_jax.data import splits
from rgbd_jax.data import transforms

MAX_LISTED = 20  # bad lines / videos named in one message; the total is always given
VERIFY_MODES = ('names', 'full', 'off')
_SUPPORTED_MODES = transforms.RGB_MODES + transforms.SINGLE_CHANNEL_MODES


@dataclasses.dataclass(frozen=True)
class BadVideo:
  """A usable video (> 16 frames) that the loader cannot turn into a correct clip."""
  record: splits.VideoRecord
  path: str                    # the split file (or TFDS build) it comes from
  problems: tuple[str, ...]    # one per bad stream, in stream order

  def where(self) -> str:
    line = f':{self.record.line}' if self.record.line else f' entry {self.record.row}'
    return f'{self.record.name!r} ({self.path}{line})'

  def as_dict(self) -> dict:
    """JSON-friendly, for logs and metrics.jsonl."""
    return {'name': self.record.name, 'split': self.path, 'line': self.record.line,
            'row': self.record.row, 'problem': self.problems[0], 'problems': len(self.problems)}


def _listing(lines: list[str], total: int, what: str) -> str:
  text = '\n'.join(f'  {s}' for s in lines[:MAX_LISTED])
  if total > MAX_LISTED:
    text += f'\n  ... and {total - MAX_LISTED} more {what}'
  return text


# --------------------------------------------------------------------------------------- labels

def _label_entries(config: ml_collections.ConfigDict, phase: str) -> tuple[str, list[splits.VideoRecord]]:
  """(what to name, every entry) of the split the loader reads: the split file, or the TFDS build's list."""
  if sources.reads_build(config, phase):
    source = sources.make_source(config, phase)  # checks tfds_data_dir and that the build exists
    from rgbd_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top
    return source.path, [e for e, _ in tfds_builder.read_entries(source.path, phase)]
  path = splits.split_file(config, phase)
  return path, splits.read_split(path)


def check_labels(config: ml_collections.ConfigDict, phase: str) -> int:
  """Checks that every entry of `phase`'s split has a label in [0, num_classes); returns the entry count.

  Raises ValueError naming the file, and for each bad entry (up to MAX_LISTED, plus the total) its
  line, video and label, with the allowed range.
  """
  num = configs.num_classes(config)
  path, records = _label_entries(config, phase)
  bad = [r for r in records if not 0 <= r.label < num]
  if bad:
    where = lambda r: f'line {r.line}' if r.line else f'entry {r.row}'
    lines = [f'{where(r)}: label {r.label} (video {r.name!r})' for r in bad]
    rebuild = ' (then rebuild the TFDS build with scripts/prepare_tfds.py)' if config.common.source == 'tfds' else ''
    source = (f'model.num_classes={config.model.num_classes}' if config.model.num_classes > 0
              else f'common.dataset={config.common.dataset!r}')
    raise ValueError(
        f'{path}: {len(bad)} of {len(records)} entries have a label outside [0, {num}) '
        f'({num} classes from {source}):\n{_listing(lines, len(bad), "bad entries")}\n'
        f'Fix the split file{rebuild}, or set --config.model.num_classes to the number of classes '
        f'of the data.')
  return len(records)


# --------------------------------------------------------------------------------------- frames

class _Checker:
  """The problems of one video: missing frame files, and with `full` undecodable or inconsistent ones."""

  def __init__(self, source: sources.FolderSource, streams: tuple[str, ...], full: bool):
    self.source, self.streams, self.full = source, streams, full
    self.layout = source.layout

  def _missing(self, record: splits.VideoRecord, stream: str) -> str | None:
    folder = self.layout.folder(record.name, stream)
    try:
      present = set(os.listdir(folder))
    except FileNotFoundError:
      return f'{stream}: folder not found: {folder}'
    except NotADirectoryError:
      return f'{stream}: not a folder: {folder}'
    except OSError as e:
      return f'{stream}: cannot list {folder} ({e})'
    names = [self.layout.frame(i, stream) for i in range(record.frames)]
    # A name with a separator would not be in the folder's own listing; ask the file system then.
    missing = [i for i, n in enumerate(names)
               if not (n in present if os.sep not in n else os.path.exists(os.path.join(folder, n)))]
    if not missing:
      return None
    first = os.path.join(folder, names[missing[0]])
    return (f'{stream}: {len(missing)} of {record.frames} frame files missing '
            f'(frame {missing[0]} first: {first})')

  def _undecodable(self, record: splits.VideoRecord, stream: str) -> str | None:
    first = None
    for i in range(record.frames):
      try:
        (data, where), = self.source.read(record, [i], stream)
        img = transforms.decode(data, where)
      except (OSError, ValueError) as e:
        return f'{stream}: {e}'
      if img.mode not in _SUPPORTED_MODES:
        return (f'{stream}: {where}: unsupported image mode {img.mode!r} '
                f'(expected RGB or a single-channel depth mode {transforms.SINGLE_CHANNEL_MODES})')
      if first is None:
        first = (img.mode, img.size, where)
      elif (img.mode, img.size) != first[:2]:
        return f'{stream}: {where}: frame is {img.mode} {img.size}, but {first[2]} is {first[0]} {first[1]}'
    return None

  def __call__(self, record: splits.VideoRecord) -> tuple[str, ...]:
    problems = []
    for stream in self.streams:
      problem = self._missing(record, stream)
      if problem is None and self.full:
        problem = self._undecodable(record, stream)
      if problem is not None:
        problems.append(problem)
    return tuple(problems)


def check_frames(config: ml_collections.ConfigDict, phase: str, full: bool = False,
                 progress: bool = True, workers: int | None = None) -> list[BadVideo]:
  """Checks the frame files of every usable video of `phase`; returns the bad videos (to skip).

  Without `dataset.skip_bad_videos` any bad video is an error: ValueError listing them (video,
  split file and line, first problem). With it, a warning gives the count and the bad videos are
  returned, so that the loader can leave them out up front; a split with no good video left is
  still an error. `workers`: threads (default: 4 per core for names, which wait on the file
  system; 1 per core for decoding).
  """
  return _check_frames(config, sources.make_source(config, phase), phase, full, progress, workers)


def _check_frames(config, source, phase, full, progress, workers=None) -> list[BadVideo]:
  if sources.reads_build(config, phase):
    logging.info("preflight %s: a TFDS build, frames not checked (the build %s holds the frames' "
                 'bytes); only labels are checked', phase, source.path)
    return []
  streams = layouts.streams(config)
  checker = _Checker(source, streams, full)
  records = source.records
  cpus = os.cpu_count() or 1
  workers = workers or (cpus if full else min(32, 4 * cpus))
  bad = []
  desc = f'preflight {phase} ({"decoding frames" if full else "frame names"})'
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool, \
       tqdm.tqdm(total=len(records), desc=desc, unit='video', disable=not progress) as bar:
    for record, problems in zip(records, pool.map(checker, records)):  # split-file order
      if problems:
        bad.append(BadVideo(record, source.path, problems))
      bar.update()
  if not bad:
    return []
  lines = [f'{b.where()}: {b.problems[0]}' for b in bad]
  summary = (f'{source.path}: {len(bad)} of {len(records)} videos have bad frame files '
             f'(streams {", ".join(streams)}; {"decoded" if full else "names checked"}):\n'
             f'{_listing(lines, len(bad), "bad videos")}')
  if not config.dataset.skip_bad_videos:
    raise ValueError(f'{summary}\nFix (or regenerate) these frame files, or set '
                     f'--config.dataset.skip_bad_videos=True to leave these videos out.')
  if len(bad) == len(records):
    raise ValueError(f'{summary}\nNo usable video left in {source.path} (dataset.skip_bad_videos=True).')
  logging.warning('%s\nThese %d videos are skipped (dataset.skip_bad_videos=True).', summary, len(bad))
  return bad


# ------------------------------------------------------------------------------------------ run

def run(config: ml_collections.ConfigDict, phases: tuple[str, ...] = ('train', 'valid'),
        progress: bool = True, workers: int | None = None) -> dict:
  """The preflight before training: labels of every phase, then frames per `dataset.verify_frames`.

  Returns {phase: {'videos': usable videos, 'entries': split entries, 'bad': [BadVideo.as_dict()],
  'check': 'names' | 'full' | 'off' | 'labels', 'seconds': float}}; the 'bad' videos are those to
  leave out (only non-empty with dataset.skip_bad_videos). Raises ValueError on a bad label, on an
  unknown verify_frames, or on a bad video without skip_bad_videos.
  """
  mode = config.dataset.get('verify_frames', 'names')
  if mode not in VERIFY_MODES:
    raise ValueError(f'dataset.verify_frames must be one of {VERIFY_MODES}, got {mode!r}')
  summary = {}
  # Labels of every phase first: a wrong class count shows before any frame is looked at.
  for phase in phases:
    start = time.perf_counter()
    summary[phase] = {'entries': check_labels(config, phase), 'seconds': time.perf_counter() - start}
  for phase in phases:
    start = time.perf_counter()
    check = 'labels' if sources.reads_build(config, phase) else mode
    source = sources.make_source(config, phase)
    bad = []
    if check in ('names', 'full'):
      bad = _check_frames(config, source, phase, check == 'full', progress, workers)
    seconds = summary[phase]['seconds'] + time.perf_counter() - start
    summary[phase] = {'videos': len(source.records), 'entries': summary[phase]['entries'],
                      'bad': [b.as_dict() for b in bad], 'check': check, 'seconds': round(seconds, 3)}
    logging.info('preflight %s: %d entries, labels in range; %d usable videos, %s; %d bad (%.2f s)',
                 phase, summary[phase]['entries'], len(source.records),
                 {'names': 'frame files present', 'full': 'frames decoded',
                  'off': 'frames not checked (dataset.verify_frames=off)',
                  'labels': 'frames not checked (a TFDS build)'}[check],
                 len(bad), seconds)
  return summary
