r"""Writes the split files of your own dataset: train.txt, valid.txt (`name frames label`) and classes.txt.

    python scripts/make_splits.py --data data/mine                      # class per subfolder
    python scripts/make_splits.py --data data/mine --csv labels.csv     # name,label[,split] rows
    python scripts/make_splits.py --data data/mine --streams rgb,depth  # for the fusion network

Class per subfolder: the frame folders are <data>/rgb/<class>/<video>/ (as extract_frames.py
writes them from videos/<class>/<video>.mp4); classes are numbered in name order. CSV: one row
per video, `name,label[,split]` with an optional header; labels are integers or class names
(numbered in name order); split is train or valid (val/test count as valid). Videos without a
split are drawn per class (--valid_fraction, --seed). Frames are counted on disk; a folder with
gaps, or rgb and depth of different lengths, is an error naming the video. The split files go to
--out (default <data>/dataset_splits), which is configs/custom.py's default common.splits.
"""
import os

from absl import app
from absl import flags

from rgbd_jax import script_errors
from rgbd_jax.data import custom_dataset

_DATA = flags.DEFINE_string('data', None, 'Dataset root (common.data).', required=True)
_OUT = flags.DEFINE_string('out', '', 'Where the split files go (default: <data>/dataset_splits).')
_CSV = flags.DEFINE_string('csv', '', 'CSV of name,label[,split] rows (default: class per subfolder).')
_CLASSES = flags.DEFINE_string('classes', '', 'Class names, one per line (for integer CSV labels).')
_DATASET = flags.DEFINE_string('dataset', 'Custom', 'Whose frame layout: Custom, NTU, NvGesture, ...')
_STREAMS = flags.DEFINE_list('streams', ['rgb'], 'Streams whose frames are counted (rgb,depth for fusion).')
_VALID = flags.DEFINE_float('valid_fraction', 0.2, 'Share of each class drawn into valid.txt.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of that draw.')


@script_errors.one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  out = _OUT.value or os.path.join(_DATA.value, 'dataset_splits')
  summary = custom_dataset.make_splits(_DATA.value, out, csv_path=_CSV.value, dataset=_DATASET.value,
                                       streams=tuple(_STREAMS.value), valid_fraction=_VALID.value,
                                       seed=_SEED.value, classes_file=_CLASSES.value)
  for phase in ('train', 'valid'):
    path, n = summary[phase]
    print(f'{phase}: {n} videos -> {path}')
  print(f'{summary["num_classes"]} classes -> {os.path.join(out, "classes.txt")}')
  splits = '' if os.path.abspath(out) == os.path.abspath(os.path.join(_DATA.value, 'dataset_splits')) \
      else f' --config.common.splits={out}'
  print(f'train with: python scripts/train.py --config configs/custom.py --workdir runs/custom '
        f'--config.common.data={_DATA.value}{splits} --config.model.num_classes={summary["num_classes"]}')


if __name__ == '__main__':
  app.run(main)
