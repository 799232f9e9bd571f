r"""Converts weights between the original's PyTorch checkpoints and this port's Orbax format.

PyTorch -> Orbax (the architecture is read from the checkpoint; it overrides the config, and
every override is logged):

    python scripts/convert_weights.py --config configs/ntu.py \
        --checkpoint model_best.pth.tar --out converted/ntu_rgb

The journal fusion network (UMDRFusion) is three checkpoints in the original (train_fusion.py's
own and its two DSNV2 streams'); they become one directory, which evaluate.py and predict.py run
without the .pth.tar files (each stream at the temperature of its own file's epoch):

    python scripts/convert_weights.py --config configs/umdr_ntu.py:fusion --checkpoint fusion/model_best.pth.tar \
        --rgb_checkpoint RGB.pth.tar --depth_checkpoint DEPTH.pth.tar --out converted/ntu_fusion
    # (or --config.model.rgb_checkpoint=... --config.model.depth_checkpoint=..., as crosscheck.py takes them)

Orbax -> PyTorch (a variables directory or a training workdir; the config stored with it is used):

    python scripts/convert_weights.py --to-torch --checkpoint runs/ntu --out model_best.pth.tar
    python scripts/convert_weights.py --to-torch --checkpoint converted/ntu_fusion --out fusion.pth.tar \
        --rgb_out rgb.pth.tar --depth_out depth.pth.tar       # the journal fusion: its three files

The .pth.tar written holds {'model': state_dict, 'optimizer', 'epoch', 'bestacc'} in the original's
key order: it loads into the original with load_state_dict(strict=True) and its `--resume` takes it.
`epoch` is the epochs completed (the source's trained epoch + 1, as the original saves it), `bestacc`
in percent, each BatchNorm's num_batches_tracked the steps trained (or the original's own counts).
The journal fusion's three files hold {'model', 'epoch', 'bestacc'} (what FeatureCapter and
train_fusion.py's evaluation read; the streams' epochs are the ones their temperatures came from).
Reading needs no torch; writing does (pip install -r requirements-torch.txt).
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rgbd_jax import script_errors
from rgbd_jax.convert import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file (PyTorch -> Orbax; the architecture comes from the checkpoint)',
                                          lock_config=False)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'the .pth.tar to convert, or with --to-torch an Orbax '
                                  'variables directory or training workdir')
_OUT = flags.DEFINE_string('out', None, 'new Orbax directory, or with --to-torch the .pth.tar to write')
_TO_TORCH = flags.DEFINE_bool('to-torch', False, 'convert Orbax -> PyTorch instead')
_EPOCH = flags.DEFINE_integer('epoch', None, 'with --to-torch: the epoch that trained the weights '
                               "(default: the source's own; the file's 'epoch' field is this + 1, as the original saves)")
_BESTACC = flags.DEFINE_float('bestacc', None, "with --to-torch: the file's 'bestacc' in percent (default: the "
                              "source's best top-1 x 100)")
_RGB = flags.DEFINE_string('rgb_checkpoint', '', "the journal fusion's RGB stream checkpoint (DSNV2 .pth.tar); "
                           'default: --config.model.rgb_checkpoint')
_DEPTH = flags.DEFINE_string('depth_checkpoint', '', "the journal fusion's depth stream checkpoint (DSNV2 .pth.tar); "
                             'default: --config.model.depth_checkpoint')
_RGB_OUT = flags.DEFINE_string('rgb_out', '', 'with --to-torch from the journal fusion network: its RGB stream\'s .pth.tar')
_DEPTH_OUT = flags.DEFINE_string('depth_out', '', 'with --to-torch from the journal fusion network: its depth '
                                 "stream's .pth.tar")
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'with --to-torch from a workdir: which checkpoint')
flags.mark_flags_as_required(['checkpoint', 'out'])


@script_errors.one_line_errors
def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if _TO_TORCH.value:
    if _RGB.value or _DEPTH.value:
      raise ValueError('--rgb_checkpoint / --depth_checkpoint are inputs of a PyTorch -> Orbax conversion; '
                       'with --to-torch the fusion\'s streams go to --rgb_out / --depth_out')
    cli.orbax_to_torch(_CHECKPOINT.value, _OUT.value, which=_WHICH.value, epoch=_EPOCH.value,
                       bestacc=_BESTACC.value, rgb_out=_RGB_OUT.value, depth_out=_DEPTH_OUT.value)
  else:
    if _CONFIG.value is None:
      raise app.UsageError('--config is required to convert a PyTorch checkpoint')
    if _RGB_OUT.value or _DEPTH_OUT.value:
      raise ValueError('--rgb_out / --depth_out are for --to-torch')
    cli.torch_to_orbax(_CHECKPOINT.value, _OUT.value, _CONFIG.value, rgb_checkpoint=_RGB.value,
                       depth_checkpoint=_DEPTH.value)


if __name__ == '__main__':
  app.run(main)
