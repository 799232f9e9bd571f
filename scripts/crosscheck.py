r"""Runs the port on an original PyTorch checkpoint and an NCTHW input batch; optionally compares.

    python scripts/crosscheck.py --checkpoint model_best.pth.tar --inputs in.npz --out out.npz \
        --config configs/ntu.py [--config.model.knn_attention=0.8] [--epoch 99] [--x64] \
        [--compare ref.npz]
    python scripts/crosscheck.py ... --train-step --keys dtn.rcm.q.weight,LinearMap.1.weight [--epoch 99]

in.npz: unimodal `video` (B,3,T,H,W), `heatmap` (B,1,T,H,W); FusionNet `rgb`,
`rgb_heatmap`, `depth`, `depth_heatmap`, `target` (B,). The architecture
(N, SEHeads, classes, ...) is read from the checkpoint and overrides the
config. --compare prints each common key's relative L2 error and exits 1
beyond tolerance (1e-6 with --x64; else 1e-3 on logits and losses).
--train-step (needs `target` in in.npz): one training step of the original's
recipe (dropout off, segment-centre frames, lr/momentum/weight decay/grad_clip
from the config, distillation weight as at --epoch): total_loss, ce_loss,
distillation_loss, logits, grad_global_norm, grad_norm/<key> of every
parameter, grad/<key> and sgd_step/<key> for --keys, bn_after/<bn>.running_mean|
running_var, under the original's state_dict names.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rgbd_jax import script_errors
from rgbd_jax.tools import crosscheck

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/ntu.py',
                                          lock_config=False)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, "the original's .pth.tar")
_INPUTS = flags.DEFINE_string('inputs', None, 'input .npz (NCTHW)')
_OUT = flags.DEFINE_string('out', None, 'output .npz')
_EPOCH = flags.DEFINE_integer('epoch', 0, 'epoch: picks the sharpness temperature')
_X64 = flags.DEFINE_bool('x64', False, 'run in float64 (parameters too)')
_COMPARE = flags.DEFINE_string('compare', '', 'reference .npz to compare with (keys may carry expected/)')
_MODE = flags.DEFINE_enum('mode', 'forward', sorted(crosscheck.MODES), 'what to compute')
_TRAIN_STEP = flags.DEFINE_bool('train-step', False, 'one training step instead of a forward pass '
                                 '(same as --mode train_step)')
_KEYS = flags.DEFINE_list('keys', [], 'with --train-step: parameters (original names) whose gradient '
                          'and updated value are written')
flags.mark_flags_as_required(['config', 'checkpoint', 'inputs', 'out'])


@script_errors.one_line_errors
def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  mode = 'train_step' if _TRAIN_STEP.value else _MODE.value
  options = {'keys': _KEYS.value} if mode == 'train_step' else {}
  sys.exit(crosscheck.main(_CONFIG.value, _CHECKPOINT.value, _INPUTS.value, _OUT.value,
                           epoch=_EPOCH.value, x64=_X64.value, compare_path=_COMPARE.value,
                           mode=mode, **options))


if __name__ == '__main__':
  app.run(main)
