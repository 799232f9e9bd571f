r"""Prepares NTU-RGBD as the original did: subject-centred frames from the raw RGB videos, guided by the
masked depth maps, and the cross-subject (@CS) / cross-view (@CV) split files.

    python scripts/prepare_ntu.py --data-root /data/NTU-RGBD [--out /data/NTU-RGBD] [--workers 8]

Reads <data-root>/nturgb+d_rgb/*.avi and <data-root>/nturgb+d_depth_masked/<name>/MDepth-%08d.png;
writes <out>/Images/<name>_rgb/%06d.jpg and <out>/dataset_splits/@CS|@CV/{train,valid}.txt.
Parallel and resumable: run it again after an interruption and finished videos are skipped.
"""
import argparse
import logging

from rgbd_jax.data import ntu_prepare


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data-root', required=True, help='folder holding nturgb+d_rgb/ and nturgb+d_depth_masked/')
  parser.add_argument('--out', default=None, help='where Images/ and dataset_splits/ go (default: --data-root)')
  parser.add_argument('--workers', type=int, default=None, help='processes (default: every core)')
  parser.add_argument('--quality', type=int, default=75, help='JPEG quality (the original saved with the default, 75)')
  parser.add_argument('--limit', type=int, default=None, help='only the first K videos (by name)')
  parser.add_argument('--skip-bad', action='store_true',
                      help='skip a video with a missing depth mask or no readable frame (default: stop with an error)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  summary = ntu_prepare.prepare(args.data_root, args.out, workers=args.workers, quality=args.quality,
                                limit=args.limit, skip_bad=args.skip_bad)
  print(f'{summary["videos"]} videos prepared, {summary["skipped"]} skipped; split files:')
  for key, path in summary['splits'].items():
    print(f'  {key}: {path}')


if __name__ == '__main__':
  main()
