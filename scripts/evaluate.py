r"""Evaluates a checkpoint on the validation split and prints its top-1 accuracies.

    python scripts/evaluate.py --workdir runs/synthetic                 # best checkpoint of a run
    python scripts/evaluate.py --workdir runs/synthetic --which latest
    python scripts/evaluate.py --checkpoint model_best.pth.tar --config configs/ntu.py \
        --config.common.data=... --config.common.splits=...             # an original checkpoint
    python scripts/evaluate.py --checkpoint converted/                  # a converted one (also the
                                                                        # journal fusion's three files in one)

The last line printed is one JSON object with at least `top1` (the merged
logits) and the other named accuracies. `--save_output` writes per-video
logits (npz: names, logits, labels, preds), like the original's option.

    python scripts/evaluate.py --workdir runs/synthetic --views 3x3     # multi-view testing
    python scripts/evaluate.py --workdir runs/synthetic --vis vis/      # the worst-classified videos

`--views CxS` adds a pass over C temporal clips x S spatial crops per video with
the scores averaged (see rgbd_jax/data/views.py): `multiview_top1` (and the other
`multiview_*`) beside the single-view accuracies, which for odd C and S are read off
the middle view of that pass (the single-view clip) instead of a second pass.
`--vis DIR` draws the `--vis_count` videos whose true class got the lowest
probability: frames, FRP heatmap, Grad-CAM of the predicted class, top-k.
"""
from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rgbd_jax import script_errors
from rgbd_jax.train import evaluation

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file; needed for a PyTorch checkpoint, optional otherwise '
    '(replaces the run\'s saved config, e.g. to point at another data folder).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', '', 'Training run directory to evaluate.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Which checkpoint of --workdir.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', '', 'An original PyTorch checkpoint (.pth.tar) or a converted checkpoint directory.')
_EPOCH = flags.DEFINE_integer(
    'epoch', None, 'Epoch for the sharpness temperature (default: the checkpoint\'s own epoch).')
_SAVE_OUTPUT = flags.DEFINE_bool(
    'save_output', False, 'Write per-video logits to <workdir or .>/<type>-output.npz.')
_OUTPUT = flags.DEFINE_string('output', '', 'Where --save_output writes (overrides the default path).')
_VIEWS = flags.DEFINE_string('views', None, 'CxS: also evaluate C temporal clips x S spatial crops per video, '
                             'scores averaged (e.g. 3x3); the single-view results are reported beside them (for odd C and S '
                             'from the middle view of the same pass).')
_VIS = flags.DEFINE_string('vis', '', 'Write pictures of the worst-classified videos into this folder.')
_VIS_COUNT = flags.DEFINE_integer('vis_count', 8, 'How many videos --vis draws.')
_LABELS = flags.DEFINE_string('labels', '', "Class names for --vis, one per line (default: the dataset's list).")


@script_errors.one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  absl_logging.set_verbosity(absl_logging.INFO)
  config = _CONFIG.value
  results = evaluation.run(workdir=_WORKDIR.value, checkpoint_path=_CHECKPOINT.value,
                           which=_WHICH.value, config=config, epoch=_EPOCH.value,
                           save_output=_SAVE_OUTPUT.value or bool(_OUTPUT.value),
                           output=_OUTPUT.value, views=_VIEWS.value, vis_dir=_VIS.value,
                           vis_count=_VIS_COUNT.value, labels=_LABELS.value)
  evaluation.print_results(results)


if __name__ == '__main__':
  app.run(main)
