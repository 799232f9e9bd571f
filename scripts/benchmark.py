"""Speed of the port, beside the original where it is given.

    python scripts/benchmark.py model [--help]   # evaluation forward per clip, training step, matmul rate
    python scripts/benchmark.py data  [--help]   # evaluation input pipeline per clip, one core and workers
"""
import argparse
import sys

from rgbd_jax.benchmark import data as data_bench
from rgbd_jax.benchmark import model as model_bench


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='what', required=True)
  model_bench.add_arguments(sub.add_parser('model', help='network speed (forward per clip, training step)'))
  data_bench.add_arguments(sub.add_parser('data', help='input pipeline speed per clip'))
  args = parser.parse_args(argv)
  return {'model': model_bench.run, 'data': data_bench.run}[args.what](args)


if __name__ == '__main__':
  sys.exit(main())
