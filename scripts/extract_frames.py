r"""Extracts the frames of a folder of videos into a dataset's frame layout (your own dataset).

    python scripts/extract_frames.py --videos my_videos/ --data data/mine                 # rgb
    python scripts/extract_frames.py --videos my_depth_videos/ --data data/mine --stream depth
    python scripts/extract_frames.py --videos raw/ --data /data/NvGesture --dataset NvGesture

Every video file under --videos (mp4, avi, webm, ...; PyAV, else OpenCV) becomes a folder of
JPEG frames named as --dataset's loader reads them: 'Custom' (default) writes
<data>/<stream>/<name>/%06d.jpg from 0, where <name> is the video's path under --videos without
its extension (class subfolders carry over: left/clip01). Parallel (--workers processes),
resumable (finished videos are skipped; run it again after an interruption) and with a progress
bar. Videos that cannot be read are listed at the end, one `error:` line each (exit status 1);
the others are done. Then: scripts/make_splits.py.
"""
import sys

from absl import app
from absl import flags

from rgbd_jax import script_errors
from rgbd_jax.data import custom_dataset

_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of video files (searched recursively).', required=True)
_DATA = flags.DEFINE_string('data', None, 'Dataset root the frames go under (common.data).', required=True)
_DATASET = flags.DEFINE_string('dataset', 'Custom', 'Whose layout and frame numbering: Custom, NTU, NvGesture, '
                               'IsoGD, THUREAD, Jester.')
_STREAM = flags.DEFINE_enum('stream', 'rgb', ['rgb', 'depth'], 'Which stream the videos are.')
_WORKERS = flags.DEFINE_integer('workers', None, 'Processes (default: every core).')
_QUALITY = flags.DEFINE_integer('quality', 75, "JPEG quality (Pillow's default, 75).")


@script_errors.one_line_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  summary = custom_dataset.extract_frames(_VIDEOS.value, _DATA.value, dataset=_DATASET.value,
                                          stream=_STREAM.value, workers=_WORKERS.value, quality=_QUALITY.value)
  print(f'{summary["videos"]} videos: {summary["done"]} extracted ({summary["frames"]} frames), '
        f'{summary["skipped"]} already there, {len(summary["failed"])} failed')
  for path, error in summary['failed']:
    print(f'error: {error}' if path in error else f'error: {path}: {error}', file=sys.stderr)
  return 1 if summary['failed'] else 0


if __name__ == '__main__':
  app.run(main)
