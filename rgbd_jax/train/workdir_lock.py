"""One run per workdir: an exclusive lock on `<workdir>/.lock`.

Two runs writing checkpoints and metrics into the same folder corrupt each
other without an error. The lock is a `fcntl.flock` on `<workdir>/.lock`,
which the kernel releases when the holding process ends, however it ends (a
crash or `kill -9` leaves no lock behind). The file also holds a small JSON
record of the holder (host, pid, start time, command line), so that a refused
run can say who holds the workdir.

* Held by a live run: `acquire` raises RuntimeError naming its host and pid.
* Left by a dead run (the flock is free, the file names another process): taken
  over with a warning naming the old holder.
* Released cleanly: the record is emptied (the file itself stays: deleting it
  would let two runs lock two different files of the same name).

In a multi-process JAX run only process 0 locks: pass
`enabled=jax.process_index() == 0`.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time

LOCK_NAME = '.lock'


def _holder_text(info: dict | None) -> str:
  if not info:
    return 'a process that has not written its details yet (or a run that is just ending)'
  return (f"host {info.get('host', '?')} pid {info.get('pid', '?')}, started {info.get('started', '?')}, "
          f"command: {info.get('command', '?')}")


class WorkdirLock:
  """Exclusive lock on a workdir; a context manager, or `.acquire()` / `.release()`."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.enabled = bool(enabled)
    self.previous: dict | None = None  # the dead holder's record, when the lock was taken over
    self._fd: int | None = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def info(self) -> dict:
    """The record this process writes into the lock file."""
    now = time.time()
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec='seconds'),
            'started_unix': now, 'command': shlex.join(sys.argv), 'cwd': os.getcwd()}

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock (creating the workdir); RuntimeError if another live process holds it."""
    if not self.enabled:
      return self
    if self._fd is not None:
      raise RuntimeError(f'{self.path}: this WorkdirLock is already held')
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          raise
        holder = _read(fd)
        raise RuntimeError(
            f'workdir {self.workdir} is in use by another run: {_holder_text(holder)} '
            f'(lock file {self.path}). Wait for that run to finish or stop it'
            + (f" (kill {holder['pid']} on {holder['host']})" if holder and 'pid' in holder and 'host' in holder
               else '')
            + ', or give this run another --workdir. The lock is released by the kernel when its '
            'process ends, so a leftover file of a dead run never blocks.') from None
      old = _read(fd)
      me = self.info()
      if old and (old.get('host'), old.get('pid')) != (me['host'], me['pid']):
        self.previous = old
        logging.warning('workdir %s: taking over the lock left by %s, which no longer holds it (%s)',
                        self.workdir, _holder_text(old), _liveness(old, me['host']))
      data = (json.dumps(me, indent=1) + '\n').encode('utf-8')
      os.ftruncate(fd, 0)
      os.pwrite(fd, data, 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)  # closing drops the flock if it was taken
      raise
    self._fd = fd
    return self

  def release(self) -> None:
    """Empties the record and drops the lock; a no-op when not held."""
    fd, self._fd = self._fd, None
    if fd is None:
      return
    try:
      os.ftruncate(fd, 0)  # a clean end: the next run takes the lock without a warning
    except OSError as e:
      logging.warning('%s: could not clear the lock record (%s)', self.path, e)
    finally:
      try:
        fcntl.flock(fd, fcntl.LOCK_UN)
      finally:
        os.close(fd)

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def __repr__(self) -> str:
    return f'WorkdirLock({self.workdir!r}, enabled={self.enabled}, held={self.held})'


def _read(fd: int) -> dict | None:
  """The holder's record in the lock file, None if empty or unreadable."""
  try:
    raw = os.pread(fd, 1 << 16, 0)
  except OSError:
    return None
  if not raw.strip():
    return None
  try:
    info = json.loads(raw.decode('utf-8'))
  except (UnicodeDecodeError, ValueError):
    return {'command': f'(unreadable lock record {raw[:80]!r})'}
  return info if isinstance(info, dict) else None


def _liveness(old: dict, host: str) -> str:
  """Why the old holder's lock is free, as far as this host can tell."""
  if old.get('host') != host:
    return (f"it ran on another host ({old.get('host')}); if it is still running there, flock does not "
            'work across hosts on this file system and both runs now write to the workdir')
  try:
    os.kill(int(old.get('pid')), 0)
  except (TypeError, ValueError):
    return 'no pid recorded'
  except ProcessLookupError:
    return 'that process has ended'
  except PermissionError:
    pass  # exists, another user's
  return 'a process with that pid exists but does not hold the lock: the pid was probably reused'
