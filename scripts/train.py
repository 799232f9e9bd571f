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

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rgbd_jax import script_errors
from rgbd_jax.train import signals

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py); override keys as --config.common.epochs=5.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: checkpoints, metrics.jsonl, config.json, plots. '
    'Default: runs/<config file name>.')


@script_errors.one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Imported here, after the start-up signal handler: a Ctrl-C during the heavy imports (JAX,
  # Flax, Orbax, grain) then ends the process at once and quietly.
  signals.exit_at_once_on_signal()
  from rgbd_jax.train import loop  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.getLogger().setLevel(logging.INFO)
  # Default: runs/<config name>[_<arg>], e.g. runs/synthetic, runs/synthetic_tiny.
  path, _, arg = flags.FLAGS['config'].config_filename.partition(':')
  name = os.path.splitext(os.path.basename(path))[0] + (f'_{arg}' if arg else '')
  workdir = _WORKDIR.value or os.path.join('runs', name)
  summary = loop.train_and_evaluate(_CONFIG.value, workdir)
  stopped = summary.get('stopped_by')
  return signals.exit_status(signals.signal.Signals[stopped].value if stopped else None)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
