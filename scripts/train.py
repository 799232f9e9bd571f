r"""Trains (and evaluates every epoch) a network of the paper.

    python scripts/train.py --config configs/synthetic.py --workdir runs/synthetic
    python scripts/train.py --config configs/ntu.py --workdir runs/ntu \
        --config.common.data=/data/NTU-RGBD --config.common.splits=/data/NTU-RGBD/dataset_splits/@CS

A workdir that holds a checkpoint is resumed exactly; a config that differs from the
workdir's record in a structural setting is refused (listing the keys), other changes
are logged and kept in <workdir>/config_history.jsonl. One run per workdir (a lock).
Before the first step every split line's label and every video's frame files are
checked (--config.dataset.verify_frames=names|full|off).

Ctrl-C or SIGTERM stops the run after the current step with a checkpoint (exit status
130 / 143); a second one exits at once. Checkpoints are also written every
--config.common.checkpoint_every_steps steps.

Multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID for every
process (Cloud TPU slices and SLURM jobs are detected without them). On CPU,
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/train.py ...` speeds XLA up
where the kernel gives huge pages on request (the log says when).
"""
import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rgbd_jax.train import loop
from rgbd_jax.train import signals

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py); override keys as --config.common.epochs=5.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: checkpoints, metrics.jsonl, config.json, plots. '
    'Default: runs/<config file name>.')
_TRACEBACK = flags.DEFINE_bool('traceback', False, 'On a bad input or setting, print the traceback '
                               'too (default: the message alone).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.getLogger().setLevel(logging.INFO)
  # Default: runs/<config name>[_<arg>], e.g. runs/synthetic, runs/synthetic_tiny.
  path, _, arg = flags.FLAGS['config'].config_filename.partition(':')
  name = os.path.splitext(os.path.basename(path))[0] + (f'_{arg}' if arg else '')
  workdir = _WORKDIR.value or os.path.join('runs', name)
  try:
    summary = loop.train_and_evaluate(_CONFIG.value, workdir)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    if _TRACEBACK.value:
      raise
    print(f'error: {e}', file=sys.stderr)
    return 1
  if summary.get('stopped_by'):
    return 128 + getattr(signals.signal.Signals, summary['stopped_by']).value
  return 0


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  sys.exit(app.run(main))
