r"""Builds a TensorFlow-free TFDS copy (array_record shards) of a dataset's videos, keeping each frame
file's original bytes, for `--config.common.source=tfds --config.common.tfds_data_dir=OUT`.

    python scripts/prepare_tfds.py --config configs/ntu.py --config.common.data=DIR \
        --config.common.splits=DIR/dataset_splits/@CS --config.dataset.type=M [--phase valid ...] --data-dir OUT

The build lands in OUT/rgbd_frames/<dataset>_<splits>_<streams>/1.0.0 (e.g. ntu_cs_rgb); one build per
dataset type (the fusion network's config, model.Network=FusionNet, stores rgb and depth together).
By default every split file present (train.txt, valid.txt) is written.
"""
import logging

from absl import app
from absl import flags
from ml_collections import config_flags

from rgbd_jax.data import tfds_builder

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
_PHASE = flags.DEFINE_multi_enum('phase', None, ['train', 'valid'],
                                 'Splits to write (repeatable); default: every split file present.')
_DATA_DIR = flags.DEFINE_string('data-dir', None, 'TFDS data directory to write into.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.getLogger().setLevel(logging.INFO)
  path = tfds_builder.prepare(_CONFIG.value, _DATA_DIR.value, _PHASE.value)
  print(f'TFDS build written to {path}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'data-dir'])
  app.run(main)
