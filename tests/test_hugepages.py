"""The scripts' restart with glibc's malloc huge pages (rgbd_jax/hugepages.py)."""

import os
import subprocess
import sys

import pytest

from rgbd_jax import hugepages

GLIBC = (2, 36)


@pytest.mark.parametrize('environ, glibc, mode, expected', [
    ({}, GLIBC, 'madvise', 'glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, GLIBC, 'madvise',
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, GLIBC, 'madvise', None),  # the user's own choice stays
    ({}, GLIBC, 'always', None),  # malloc's maps get huge pages without asking
    ({}, GLIBC, 'never', None),
    ({}, GLIBC, '', None),  # no such kernel file
    ({'RGBD_JAX_HUGEPAGES': '1'}, GLIBC, 'always', 'glibc.malloc.hugetlb=1'),
    ({'RGBD_JAX_HUGEPAGES': '0'}, GLIBC, 'madvise', None),
    ({}, None, 'madvise', None),  # another C library
    ({'RGBD_JAX_HUGEPAGES': '1'}, (2, 31), 'madvise', None),  # glibc before the tunable existed
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, GLIBC, 'madvise', None),  # restarted already
])
def test_planned_tunables(environ, glibc, mode, expected):
  assert hugepages.planned_tunables(environ, glibc, mode) == expected


def test_bad_setting_names_the_variable():
  with pytest.raises(ValueError, match=r"RGBD_JAX_HUGEPAGES='yes'"):
    hugepages.planned_tunables({'RGBD_JAX_HUGEPAGES': 'yes'}, GLIBC, 'madvise')


def test_thp_mode(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert hugepages.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert hugepages.thp_mode(str(path)) == 'always'
  assert hugepages.thp_mode(str(tmp_path / 'missing')) == ''


_PROBE = ('import os, sys; from rgbd_jax import hugepages; hugepages.ensure(); '
          'print(os.environ.get("GLIBC_TUNABLES"), hugepages.active(), sys.argv[1:])')


def _probe(setting, *args):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('GLIBC_TUNABLES', 'RGBD_JAX_HUGEPAGES'))}
  env['RGBD_JAX_HUGEPAGES'] = setting
  return subprocess.run([sys.executable, '-c', _PROBE, *(args or ('a', '--b=1'))], env=env, capture_output=True, text=True,
                        check=True)


def test_restart_once_with_the_tunable_and_the_same_arguments():
  proc = _probe('1')
  if hugepages.glibc_version() is None or hugepages.glibc_version() < (2, 35):
    assert proc.stdout.split() == ['None', 'False', "['a',", "'--b=1']"]
    assert 'restarting' not in proc.stderr
    return
  assert proc.stdout.split() == ['glibc.malloc.hugetlb=1', 'True', "['a',", "'--b=1']"]
  assert proc.stderr.count('restarting with GLIBC_TUNABLES=glibc.malloc.hugetlb=1') == 1


def test_off_runs_as_is():
  proc = _probe('0')
  assert proc.stdout.split() == ['None', 'False', "['a',", "'--b=1']"]
  assert proc.stderr == ''


def test_help_runs_as_is():
  proc = _probe('1', '--help')
  assert proc.stdout.split() == ['None', 'False', "['--help']"]
  assert proc.stderr == ''


def test_bad_setting_stops_the_script_with_its_name():
  env = dict(os.environ, RGBD_JAX_HUGEPAGES='yes')
  proc = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True)
  assert proc.returncode == 1 and proc.stdout == ''
  assert "error: RGBD_JAX_HUGEPAGES='yes': expected 0 (off), 1 (on)" in proc.stderr
