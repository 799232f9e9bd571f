"""Split files: one video per line, `name num_frames label`.

Fields are separated by any run of spaces or tabs; a trailing '/' on the name is dropped.

The original reads these with a bare `split(' ')` and crashes (or worse,
silently mislabels) on a malformed line; here every problem names the file and
the line.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

# Videos this short or shorter are dropped, as the original does.
MIN_FRAMES_EXCLUSIVE = 16


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  name: str     # as written in the split file (a relative folder)
  frames: int   # frame count from the split file
  label: int
  row: int      # 0-based entry number in the split file (comments/blank lines not counted)
  # 1-based line in the split file, for messages (0: not known, e.g. entries of a TFDS build).
  # Not part of equality: the same entry read from a build and from the file is the same record.
  line: int = dataclasses.field(default=0, compare=False)


def split_file(config: ml_collections.ConfigDict, phase: str) -> str:
  """The split file of `phase` ('train' | 'valid'), with the original's THU-READ depth rule."""
  if phase not in ('train', 'valid'):
    raise ValueError(f"phase must be 'train' or 'valid', got {phase!r}")
  if not config.common.splits:
    raise ValueError('config.common.splits is empty: set it to the folder holding train.txt / valid.txt')
  if config.common.dataset == 'THUREAD' and config.dataset.type == 'K':
    return os.path.join(config.common.splits, f'depth_{phase}_lst.txt')
  return os.path.join(config.common.splits, f'{phase}.txt')


def read_split(path: str) -> list[VideoRecord]:
  """All entries of a split file, in file order (short videos included)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'split file not found: {path}')
  records = []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, start=1):
      text = line.strip()
      if not text or text.startswith('#'):
        continue
      fields = text.split()
      if len(fields) != 3:
        raise ValueError(f'{path}:{lineno}: expected "name num_frames label", got {text!r}')
      name, frames, label = fields
      # 'video/' names the same folder as 'video' (a trailing slash from shell completion)
      name = name.rstrip('/') or name
      try:
        frames, label = int(frames), int(label)
      except ValueError:
        raise ValueError(f'{path}:{lineno}: frame count and label must be integers, got {text!r}') from None
      if frames < 0 or label < 0:
        raise ValueError(f'{path}:{lineno}: negative frame count or label in {text!r}')
      records.append(VideoRecord(name, frames, label, len(records), lineno))
  return records


def usable(records: list[VideoRecord], path: str) -> list[VideoRecord]:
  """The videos the original keeps (more than 16 frames); an empty result is an error."""
  kept = [r for r in records if r.frames > MIN_FRAMES_EXCLUSIVE]
  if not kept:
    raise ValueError(f'{path}: no video with more than {MIN_FRAMES_EXCLUSIVE} frames '
                     f'({len(records)} entries in the file)')
  return kept
