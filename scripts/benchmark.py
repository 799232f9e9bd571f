"""Speed of the port, beside the original where it is given.

    python scripts/benchmark.py model [--help]   # evaluation forward per clip, training step, matmul rate
    python scripts/benchmark.py data  [--help]   # evaluation input pipeline per clip, one core and workers

On CPU, `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python scripts/benchmark.py ...`
times with glibc's malloc huge pages (rgbd_jax/hugepages.py); the report says
which setting each figure used.
"""
import argparse
import importlib
import sys

# each subcommand imports only what it measures (the model benchmark needs no input pipeline)
MODULES = {'model': 'rgbd_jax.tools.benchmark.model', 'data': 'rgbd_jax.tools.benchmark.data'}
HELP = {'model': 'network speed (forward per clip, training step)', 'data': 'input pipeline speed per clip'}


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
  args = parser.parse_args(argv)
  return modules[args.what].run(args)


if __name__ == '__main__':
  sys.exit(main())
