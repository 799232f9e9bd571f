"""Speed of the port, beside the original where it is given.

    python scripts/benchmark.py model [--help]   # evaluation forward per clip, training step, matmul rate
    python scripts/benchmark.py data  [--help]   # evaluation input pipeline per clip, one core and workers

Like the other scripts it restarts once with glibc's malloc asking for huge
pages (rgbd_jax/hugepages.py; RGBD_JAX_HUGEPAGES=0 runs without). The original,
when timed, runs in the same process, under the same setting.
"""
import argparse
import importlib
import sys

from rgbd_jax import hugepages

# each subcommand imports only what it measures (the model benchmark needs no input pipeline)
MODULES = {'model': 'rgbd_jax.benchmark.model', 'data': 'rgbd_jax.benchmark.data'}
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
  hugepages.ensure()  # glibc reads its tunables at start-up: this may restart the command once
  sys.exit(main())
