"""Speed of the port, beside the original where it is given.

    python scripts/benchmark.py model [--help]   # train.py's training step and evaluation forward: batch
                                                 # and dtype sweep, MFU, memory; --original: beside the original
    python scripts/benchmark.py model --config.model.Network=FusionNet --dtypes bfloat16 --batches 1,2,4
    python scripts/benchmark.py data  [--help]   # evaluation input pipeline per clip, one core and workers

On CPU, `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/benchmark.py ...`
times with glibc's malloc huge pages (rgbd_jax/hugepages.py); the report says
which setting each figure used.
"""
import argparse
import importlib
import sys

# each subcommand imports only what it measures
MODULES = {'model': 'rgbd_jax.tools.benchmark.model', 'data': 'rgbd_jax.tools.benchmark.data'}
HELP = {'model': 'network speed (training step, evaluation forward; batch/dtype sweep)',
        'data': 'input pipeline speed per clip'}


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='what', required=True)
  chosen = next((a for a in argv if a in MODULES), None)
  modules = {}
  for name, path in MODULES.items():
    p = sub.add_parser(name, help=HELP[name])
    if name == chosen or chosen is None:
      modules[name] = importlib.import_module(path)
      modules[name].add_arguments(p)
  if chosen == 'model':  # --config.section.key=value overrides, as scripts/train.py takes them
    argv = modules['model'].normalize_argv(argv)
  args = parser.parse_args(argv)
  return modules[args.what].run(args)


if __name__ == '__main__':
  sys.exit(main())
