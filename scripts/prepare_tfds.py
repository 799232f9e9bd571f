r"""Builds a TensorFlow-free TFDS copy (array_record shards) of a dataset's videos, keeping each frame
file's original bytes, for `--config.common.source=tfds --config.common.tfds_data_dir=OUT`.

    python scripts/prepare_tfds.py --config configs/ntu.py --config.common.data=DIR \
        --config.common.splits=DIR/dataset_splits/@CS --config.dataset.type=M [--phase valid ...] --data-dir OUT

The build lands in OUT/rgbd_frames/<dataset>_<splits>_<streams>/1.0.0 (e.g. ntu_cs_rgb); one build per
dataset type (the fusion network's config, model.Network=FusionNet, stores rgb and depth together).
By default every split file present (train.txt, valid.txt) is written.

`--packed` writes the packed TRAINING build instead (training split only): every frame decoded,
resized to dataset.resize with the loader's Pillow filter (e.g. NTU 320x240) and re-encoded as
JPEG (`--quality`, default 90, 4:4:4), in OUT/rgbd_frames/<...>_packed<W>x<H>/1.0.0, so that
training decodes small JPEGs and skips the big resize. Train from it with
`--config.dataset.packed=True --config.common.tfds_data_dir=OUT`; evaluation keeps reading the
original frames (`common.source`), exactly. What changes in training clips: the rotation acts on
the resized frame (the same map for an isotropic resize such as 640x480 -> 320x240), and the
JPEG re-encoding loses about one grey level on average (rgbd_jax/data/tfds_builder.py).
"""
import logging
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from rgbd_jax.data import tfds_builder

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
_PHASE = flags.DEFINE_multi_enum('phase', None, ['train', 'valid'],
                                 'Splits to write (repeatable); default: every split file present '
                                 '(--packed: train only).')
_DATA_DIR = flags.DEFINE_string('data-dir', None, 'TFDS data directory to write into.')
_PACKED = flags.DEFINE_bool('packed', False,
                            'Write the packed training build (same as --config.dataset.packed=True): frames '
                            'resized to dataset.resize and re-encoded as JPEG, training split only. For '
                            'training; evaluation reads the original frames and stays exact.')
_QUALITY = flags.DEFINE_integer('quality', tfds_builder.DEFAULT_QUALITY, 'JPEG quality of packed frames (1..100).')
_WORKERS = flags.DEFINE_integer('workers', None, 'Processes decoding, resizing and encoding packed frames '
                                '(default: one per core).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.getLogger().setLevel(logging.INFO)
  config = _CONFIG.value
  if _PACKED.value:
    config.dataset.packed = True
  workers = _WORKERS.value or len(os.sched_getaffinity(0))
  path = tfds_builder.prepare(config, _DATA_DIR.value, _PHASE.value, quality=_QUALITY.value, workers=workers)
  print(f'TFDS build written to {path}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'data-dir'])
  app.run(main)
