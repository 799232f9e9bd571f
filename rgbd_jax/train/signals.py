"""SIGINT/SIGTERM during a run: stop promptly and cleanly; a second signal exits at once.

Spot GPUs and TPU VMs announce preemption with SIGTERM; a user presses Ctrl-C.

* Before training starts (imports, data, preflight, initialisation,
  compilation) there is nothing to save: a signal ends the process at once
  (after the given cleanups, e.g. releasing the workdir lock), from wherever
  the main thread is. Raising KeyboardInterrupt instead is what lost a Ctrl-C
  in the first seconds: Python may run the handler inside a garbage-collection
  callback, which swallows the exception, and an exception in the middle of a
  compile or of a worker pool starting may not unwind quickly.
* Once training has started (`training = True`) a signal only sets a flag:
  the loop finishes the current step, saves a checkpoint at it and returns.
* A second signal ends the process immediately.

Exit status: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Callable, Sequence

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int | None) -> int:
  """The shell's convention for a run ended by a signal: 128 + its number (0 when none)."""
  return 128 + signum if signum else 0


def _exit_now(signum: int, why: str, cleanups: Sequence[Callable[[], None]] = ()) -> None:
  print(f'\n{signal.Signals(signum).name} {why}: exiting', file=sys.stderr, flush=True)
  for cleanup in cleanups:
    try:
      cleanup()
    except Exception:  # noqa: BLE001 (leaving anyway)
      pass
  logging.shutdown()
  os._exit(exit_status(signum))


def exit_at_once_on_signal() -> None:
  """Until a `StopRequest` takes over: a stop signal ends the process at once (a script's imports)."""
  if threading.current_thread() is threading.main_thread():
    for s in SIGNALS:
      signal.signal(s, lambda signum, frame: _exit_now(signum, 'during start-up'))


class StopRequest:
  """Installs the handlers for its `with` block (main thread only; elsewhere it only holds the flag)."""

  def __init__(self, cleanups: Sequence[Callable[[], None]] = ()):
    self.signum: int | None = None
    self.training = False  # False: a signal exits at once; True: it asks the loop to stop
    self._cleanups = tuple(cleanups)
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ''

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      _exit_now(signum, 'again')
    if not self.training:
      _exit_now(signum, 'before training started, nothing to save', self._cleanups)
    self.signum = signum
    logging.warning('%s: stopping after this step with a checkpoint (again to exit at once)', self.name)

  def __enter__(self) -> 'StopRequest':
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
