"""The opt-in huge page setting (rgbd_jax/hugepages.py): a hint, never a restart."""

import os
import subprocess
import sys

import pytest

from rgbd_jax import hugepages

GLIBC = (2, 36)


@pytest.mark.parametrize('backend, environ, glibc, mode, hinted', [
    ('cpu', {}, GLIBC, 'madvise', True),
    ('cpu', {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, GLIBC, 'madvise', True),
    ('cpu', {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, GLIBC, 'madvise', False),  # the user's choice
    ('cpu', {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, GLIBC, 'madvise', False),  # on already
    ('cpu', {}, GLIBC, 'always', False),  # malloc's maps get huge pages without asking
    ('cpu', {}, GLIBC, 'never', False),
    ('cpu', {}, GLIBC, '', False),  # no such kernel file
    ('cpu', {}, None, 'madvise', False),  # another C library
    ('cpu', {}, (2, 31), 'madvise', False),  # glibc before the tunable existed
    ('gpu', {}, GLIBC, 'madvise', False),
    ('tpu', {}, GLIBC, 'madvise', False),
])
def test_hint(backend, environ, glibc, mode, hinted):
  line = hugepages.hint(backend, environ, glibc, mode)
  assert (line is not None) == hinted
  if hinted:
    assert hugepages.LAUNCH in line and '\n' not in line


def test_active():
  assert hugepages.active({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'})
  assert not hugepages.active({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})
  assert not hugepages.active({})


def test_thp_mode(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert hugepages.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert hugepages.thp_mode(str(path)) == 'always'
  assert hugepages.thp_mode(str(tmp_path / 'missing')) == ''


def test_no_script_or_library_module_restarts_the_interpreter():
  """Debuggers, IDE launchers and notebooks do not expect a process to re-execute itself."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  found = []
  for folder in ('rgbd_jax', 'scripts'):
    for dirpath, _, files in os.walk(os.path.join(root, folder)):
      for name in files:
        if name.endswith('.py'):
          text = open(os.path.join(dirpath, name)).read()
          if any(f'os.{call}(' in text for call in ('execv', 'execve', 'execl', 'execvp')):
            found.append(os.path.join(dirpath, name))
  assert not found


def test_script_help_runs_in_one_process():
  env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, os.path.join(root, 'scripts', 'benchmark.py'), '--help'],
                        env=env, capture_output=True, text=True, check=True)
  assert 'restart' not in proc.stderr and 'usage' in proc.stdout
