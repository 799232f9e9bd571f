"""One run per workdir: a second run refuses while the first lives; a dead run's lock is taken over."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rgbd_jax.train import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A holder in its own process: takes the lock, says so, then waits to be told to go (or killed).
HOLDER = textwrap.dedent('''
    import sys
    from rgbd_jax.train import workdir_lock
    lock = workdir_lock.WorkdirLock(sys.argv[1]).acquire()
    print('locked', flush=True)
    sys.stdin.readline()
    lock.release()
''')


def start_holder(workdir):
  p = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir)], cwd=REPO, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'locked'
  return p


def test_second_run_refuses_and_names_the_holder(tmp_path):
  holder = start_holder(tmp_path / 'run')
  try:
    with pytest.raises(RuntimeError) as e:
      workdir_lock.WorkdirLock(str(tmp_path / 'run')).acquire()
    text = str(e.value)
    assert f'pid {holder.pid}' in text and f'kill {holder.pid}' in text
    assert 'another --workdir' in text and os.uname().nodename in text
    with workdir_lock.WorkdirLock(str(tmp_path / 'other')) as other:  # another workdir is free
      assert other.held
    with workdir_lock.WorkdirLock(str(tmp_path / 'run'), enabled=False) as lock:  # not process 0
      assert not lock.held
  finally:
    holder.communicate('go\n', timeout=30)
  assert holder.returncode == 0
  assert (tmp_path / 'run' / '.lock').read_text() == ''  # a clean release empties the record


def test_clean_release_then_reacquire_without_warning(tmp_path, caplog):
  lock = workdir_lock.WorkdirLock(str(tmp_path / 'w'))
  with caplog.at_level(logging.WARNING):
    with lock:
      info = json.loads((tmp_path / 'w' / '.lock').read_text())
      assert info['pid'] == os.getpid() and 'command' in info and 'started' in info
      with pytest.raises(RuntimeError, match=f'pid {os.getpid()}'):  # a second lock in this process
        workdir_lock.WorkdirLock(str(tmp_path / 'w')).acquire()
    assert not lock.held
    with workdir_lock.WorkdirLock(str(tmp_path / 'w')):
      pass
  assert 'taking over' not in caplog.text


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
  holder = start_holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=30)
  holder.stdin.close()
  holder.stdout.close()
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == holder.pid  # its record is left
  with caplog.at_level(logging.WARNING):
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  try:
    assert lock.previous['pid'] == holder.pid
    assert f'taking over the lock left by host {os.uname().nodename} pid {holder.pid}' in caplog.text
    assert 'that process has ended' in caplog.text
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
  finally:
    lock.release()
