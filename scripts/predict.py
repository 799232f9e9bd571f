r"""Recognises the actions of your own videos: top-k classes with probabilities and names.

    python scripts/predict.py --checkpoint runs/synthetic clip.mp4 other.mp4 frames_dir/
    python scripts/predict.py --checkpoint converted_nv_rgb/ --views 3x3 --vis vis/ --json out.json clip.webm
    python scripts/predict.py --checkpoint fusion_best.pth.tar --config configs/nvgesture.py \
        --config.model.Network=FusionNet --rgb a.mp4 --depth a_depth.mp4 --rgb b/ --depth b_depth/

--checkpoint: a training workdir (its best checkpoint, --which latest for the last), a converted
directory (convert_weights.py), or an original .pth.tar, converted on the fly (give --config for
its dataset). Videos: positional arguments (the modality the network takes), or --rgb/--depth,
repeated in pairs for the fusion network. Each is a video file (mp4, avi, webm, ...; PyAV or
OpenCV) or a folder of numbered frames (000000.jpg ...; 16-bit depth PNGs take the dataset's depth
path). The clip is made exactly as scripts/evaluate.py makes it; --views CxS averages C temporal
clips x S crops. One line per video; --json writes the per-branch (xs, xm, xl, ...) and per-view
scores; --vis writes a PNG strip and a GIF per video (frames, FRP heatmap, Grad-CAM, top-k).

    python scripts/predict.py --checkpoint converted_ntu/ --ntu_roi NTU/nturgb+d_depth_masked \
        NTU/nturgb+d_rgb/S001C001P001R001A001_rgb.avi

--ntu_roi: raw NTU-RGBD RGB videos, cropped around the subject (found in the masked depth maps: the
nturgb+d_depth_masked folder, or one video's own folder of MDepth-%08d.png) and JPEG-encoded exactly as
scripts/prepare_ntu.py prepares the dataset, before the clip is made.
"""
import json
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from rgbd_jax import script_errors

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file: needed for a PyTorch .pth.tar (its dataset), optional otherwise '
    '(replaces the config saved with the weights).', lock_config=True)
_CHECKPOINT = flags.DEFINE_string('checkpoint', '', 'Training workdir, converted directory or .pth.tar.')
_WHICH = flags.DEFINE_enum('which', 'best', ['best', 'latest'], 'Which checkpoint of a workdir.')
_EPOCH = flags.DEFINE_integer('epoch', None, "Epoch for the sharpness temperature (default: the checkpoint's own).")
_RGB = flags.DEFINE_multi_string('rgb', [], 'RGB video file or frame folder (repeatable).')
_DEPTH = flags.DEFINE_multi_string('depth', [], 'Depth video file or frame folder (repeatable).')
_VIEWS = flags.DEFINE_string('views', '1x1', 'CxS: C temporal clips x S spatial crops, scores averaged '
                             '(1x1: the original protocol).')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Classes shown per video.')
_LABELS = flags.DEFINE_string('labels', '', 'Class names, one per line in label order (default: the '
                              "dataset's list, or <splits>/classes.txt of a custom dataset).")
_JSON = flags.DEFINE_string('json', '', "Write every video's scores here as JSON ('-': stdout).")
_VIS = flags.DEFINE_string('vis', '', 'Write a PNG strip and a GIF per video into this folder.')
_NTU_ROI = flags.DEFINE_string('ntu_roi', '', 'Raw NTU-RGBD RGB videos: their masked depth maps '
                               '(nturgb+d_depth_masked, or one video\'s MDepth folder); each frame is cropped '
                               'around the subject as scripts/prepare_ntu.py does.')


def _videos(positional, rgb, depth, streams):
  if positional and (rgb or depth):
    raise ValueError('give the videos either as arguments or with --rgb/--depth, not both')
  if positional:
    if len(streams) != 1:
      raise ValueError('the fusion network takes pairs: give --rgb A --depth B for each video')
    return [{streams[0]: p} for p in positional]
  if len(streams) == 2:
    if len(rgb) != len(depth):
      raise ValueError(f'--rgb given {len(rgb)} times, --depth {len(depth)} times: the fusion network '
                       'takes one of each per video, in the same order')
    return [{'rgb': r, 'depth': d} for r, d in zip(rgb, depth)]
  given = {'rgb': rgb, 'depth': depth}
  other = 'depth' if streams[0] == 'rgb' else 'rgb'
  if given[other]:
    raise ValueError(f'this network takes {streams[0]} videos only: --{other} is not used')
  return [{streams[0]: p} for p in given[streams[0]]]


@script_errors.one_line_errors
def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)
  if not _CHECKPOINT.value:
    raise app.UsageError('give --checkpoint (a training workdir, a converted directory or a .pth.tar)')
  from rgbd_jax import predict  # pylint: disable=g-import-not-at-top  # after flag parsing: --help is quick
  recognizer = predict.Recognizer.from_checkpoint(_CHECKPOINT.value, config=_CONFIG.value, epoch=_EPOCH.value,
                                                  which=_WHICH.value, labels=_LABELS.value)
  videos = _videos(argv[1:], _RGB.value, _DEPTH.value, recognizer.streams)
  if not videos:
    raise app.UsageError('give at least one video (file or frame folder)')
  results, failed = [], 0
  for video in videos:
    try:
      prediction = recognizer.predict(**video, views=_VIEWS.value, vis_dir=_VIS.value, top_k=_TOP_K.value,
                                      ntu_roi=_NTU_ROI.value)
    except (ValueError, FileNotFoundError) as e:
      if len(videos) == 1:
        raise
      # one bad video among several: say so and go on with the others (exit status 1 at the end)
      print(f'error: {e}', file=sys.stderr, flush=True)
      failed += 1
      continue
    print(prediction.line(_TOP_K.value), flush=True)
    results.append(prediction.to_dict(_TOP_K.value))
  if _JSON.value:
    text = json.dumps(results, indent=1)
    if _JSON.value == '-':
      sys.stdout.write(text + '\n')
    else:
      with open(_JSON.value, 'w') as f:
        f.write(text + '\n')
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main)
