"""Transparent huge pages for XLA's CPU buffers, through glibc's malloc tunable.

XLA's CPU runtime takes each step's temporary buffers (1.2 GB for a training
step at B=2, T=64, 96x96) from malloc, which mmaps them afresh and unmaps them
after the step. Where the kernel gives huge pages only on request
(/sys/kernel/mm/transparent_hugepage/enabled = madvise, the common default),
every step then touches ~300k fresh 4 KiB pages: on the 2-core machine that was
0.45 s of kernel time per training step, and the step took 1.04-1.11 s. glibc
>= 2.35 asks for huge pages on everything malloc maps when started with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1: the same step then took 0.79-0.90 s.
Tunables are read once at process start, so `ensure()` re-executes the
command line with the tunable added, once, before the work begins.

RGBD_JAX_HUGEPAGES: unset = only where the kernel's mode is `madvise`;
0 = never; 1 = wherever the C library is glibc.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

ENV = 'RGBD_JAX_HUGEPAGES'
TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'
_HELP = ('-h', '--help', '--helpshort', '--helpfull')


def thp_mode(path: str = THP_MODE_FILE) -> str:
  """The kernel's transparent huge page mode (the bracketed word), or '' where unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return ''
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else ''


def glibc_version() -> tuple[int, ...] | None:
  """(major, minor) of the running glibc, or None for another C library."""
  try:
    name, _, version = os.confstr('CS_GNU_LIBC_VERSION').partition(' ')
  except (AttributeError, ValueError, OSError):
    return None
  if name != 'glibc':
    return None
  try:
    return tuple(int(p) for p in version.split('.')[:2])
  except ValueError:
    return None


def planned_tunables(environ: Mapping[str, str], glibc: tuple[int, ...] | None, mode: str) -> str | None:
  """The GLIBC_TUNABLES value to restart with, or None to run as is."""
  choice = environ.get(ENV, '').strip()
  if choice not in ('', '0', '1'):
    raise ValueError(f'{ENV}={choice!r}: expected 0 (off), 1 (on) or unset (on where the kernel mode is madvise)')
  if choice == '0' or glibc is None or glibc < (2, 35):
    return None
  if choice == '' and mode != 'madvise':  # 'always': malloc's maps get huge pages anyway; 'never': none to get
    return None
  current = environ.get('GLIBC_TUNABLES', '')
  if TUNABLE in _tunables(current):
    return None  # set already: by the user, or by our restart (so it happens once)
  return f'{current}:{TUNABLE}=1' if current else f'{TUNABLE}=1'


def _tunables(value: str) -> dict[str, str]:
  """GLIBC_TUNABLES' name=value pairs (colon-separated)."""
  return dict(t.partition('=')[::2] for t in value.split(':') if t)


def ensure() -> None:
  """Re-executes this process once with huge pages for malloc where that helps; call first in a script."""
  if any(a in _HELP for a in sys.argv[1:]):
    return  # nothing to run: print the help without a restart line
  try:
    tunables = planned_tunables(os.environ, glibc_version(), thp_mode())
  except ValueError as e:
    sys.exit(f'error: {e}')
  if tunables is None:
    return
  print(f'rgbd_jax: restarting with GLIBC_TUNABLES={tunables} (huge pages for XLA\'s CPU buffers; '
        f'{ENV}=0 turns this off)', file=sys.stderr, flush=True)
  os.environ['GLIBC_TUNABLES'] = tunables
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # python's own flags (-m, -u, ...) kept


def active() -> bool:
  """Whether this process runs with glibc's malloc huge pages on."""
  return _tunables(os.environ.get('GLIBC_TUNABLES', '')).get(TUNABLE) == '1'
