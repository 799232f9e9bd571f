"""Class names: the shipped lists of the five datasets, a user's labels file, numbered placeholders.

A labels file holds one class name per line in label order (label 0 first); blank lines and lines
starting with '#' are skipped. `scripts/make_splits.py` writes one (`classes.txt`) beside the split
files of a custom dataset, and `for_config` finds it there.

Shipped (`rgbd_jax/data/class_lists/`): NTU RGB+D 60, NvGesture (25), Jester (27, in the order of
the dataset's jester-v1-labels.csv), THU-READ (40, from the video names of the original's split
files: see the file's header), the synthetic demo's 6 motions; IsoGD (249) publishes numbered
classes only: its list is numbered placeholders.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import ml_collections

from rgbd_jax import configs

LISTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'class_lists')
# common.dataset -> (file in LISTS_DIR, whether the names are real ones)
SHIPPED = {
    'NTU': ('ntu60.txt', True),
    'NvGesture': ('nvgesture.txt', True),
    'Jester': ('jester.txt', True),
    'IsoGD': ('isogd.txt', False),
    'THUREAD': ('thu_read.txt', True),
}
SPLITS_FILE = 'classes.txt'  # a custom dataset's list, beside its split files


@dataclasses.dataclass(frozen=True)
class ClassNames:
  names: tuple[str, ...]
  source: str     # where they come from (a file, or 'placeholders')
  known: bool     # False: numbered placeholders, not real names

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, i: int) -> str:
    return self.names[i]


def read(path: str) -> tuple[str, ...]:
  """The names of a labels file, in label order."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'labels file not found: {path}')
  with open(path, encoding='utf-8') as f:
    names = tuple(line.strip() for line in f if line.strip() and not line.lstrip().startswith('#'))
  if not names:
    raise ValueError(f'{path}: no class names in the file (one name per line, label 0 first)')
  return names


def write(path: str, names: list[str] | tuple[str, ...]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(f'{n}\n' for n in names)


def placeholders(n: int) -> ClassNames:
  return ClassNames(tuple(f'class {i}' for i in range(n)), 'placeholders', False)


def from_file(path: str, num_classes: int) -> ClassNames:
  """A user's labels file; a count that is not the model's class count is an error."""
  names = read(path)
  if len(names) != num_classes:
    raise ValueError(f'{path} names {len(names)} classes, but the model has {num_classes} '
                     '(one name per line, label 0 first)')
  return ClassNames(names, path, True)


def for_config(config: ml_collections.ConfigDict, labels: str = '') -> ClassNames:
  """The class names of a config's model: `labels` if given, else the dataset's list, else placeholders.

  The dataset's list is the shipped one (see the module docstring), the synthetic demo's motions, or
  for other datasets `<common.splits>/classes.txt`. A shipped list of another length than the
  model's classes (e.g. NTU-120 under common.dataset='NTU') gives placeholders with a warning.
  """
  n = configs.num_classes(config)
  if labels:
    return from_file(labels, n)
  dataset = config.common.dataset
  if dataset in SHIPPED:
    file, known = SHIPPED[dataset]
    path = os.path.join(LISTS_DIR, file)
    names = read(path)
    if len(names) == n:
      return ClassNames(names, path, known)
    logging.warning('the %s class list names %d classes, the model has %d: numbered placeholders '
                    'instead (give a labels file)', dataset, len(names), n)
    return placeholders(n)
  if dataset == 'Synthetic':
    from rgbd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    if len(synthetic.CLASSES) == n:
      return ClassNames(tuple(synthetic.CLASSES), 'rgbd_jax.data.synthetic', True)
  splits_dir = str(config.common.splits)
  path = os.path.join(splits_dir, SPLITS_FILE) if splits_dir else ''
  if path and os.path.isfile(path):
    names = read(path)
    if len(names) == n:
      return ClassNames(names, path, True)
    logging.warning('%s names %d classes, the model has %d: numbered placeholders instead',
                    path, len(names), n)
  return placeholders(n)
