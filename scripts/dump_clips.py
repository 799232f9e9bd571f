r"""Writes the evaluation clips of a split to an .npz (the original's NCTHW layout), to compare
preprocessing with the original or to feed scripts/crosscheck.py.

    python scripts/dump_clips.py --config configs/ntu.py --config.common.data=DIR \
        --config.common.splits=DIR/dataset_splits/@CS --config.dataset.type=M --phase valid --out OUT.npz

Keys: video (N,3,T,S,S) float32 = (u8 - 127.5)/128, heatmap (N,1,T,S,S), label (N,),
indices (N,T) 0-based frame indices, name (N,); split-file order. `--limit K`: the first K.
`--config.common.source=tfds --config.common.tfds_data_dir=D` reads a prepare_tfds.py build instead.
"""
import logging

from absl import app
from absl import flags
from ml_collections import config_flags

from rgbd_jax.data import dump

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
_PHASE = flags.DEFINE_enum('phase', 'valid', ['train', 'valid'],
                           'Split file to read (<splits>/<phase>.txt); clips use evaluation sampling either way.')
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_LIMIT = flags.DEFINE_integer('limit', None, 'Only the first K videos of the split.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.getLogger().setLevel(logging.INFO)
  arrays = dump.dump_clips(_CONFIG.value, _PHASE.value, _OUT.value, _LIMIT.value)
  print(f'wrote {len(arrays["label"])} clips to {_OUT.value}: '
        + ', '.join(f'{k} {v.shape}' for k, v in arrays.items()))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
