r"""Trains (and evaluates every epoch) a network of the paper.

    python scripts/train.py --config configs/synthetic.py --workdir runs/synthetic
    python scripts/train.py --config configs/ntu.py --workdir runs/ntu \
        --config.common.data=/data/NTU-RGBD --config.common.splits=/data/NTU-RGBD/dataset_splits/@CS

A workdir that holds a checkpoint is resumed exactly. Multi-host: set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID for every process
(Cloud TPU slices and SLURM jobs are detected without them).
"""
import logging
import os

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rgbd_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py); override keys as --config.common.epochs=5.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: checkpoints, metrics.jsonl, config.json, plots. '
    'Default: runs/<config file name>.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.getLogger().setLevel(logging.INFO)
  # Default: runs/<config name>[_<arg>], e.g. runs/synthetic, runs/synthetic_tiny.
  path, _, arg = flags.FLAGS['config'].config_filename.partition(':')
  name = os.path.splitext(os.path.basename(path))[0] + (f'_{arg}' if arg else '')
  workdir = _WORKDIR.value or os.path.join('runs', name)
  loop.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
