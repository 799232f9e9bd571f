"""SIGINT/SIGTERM during a run: stop promptly and cleanly; a second signal exits at once.

Spot GPUs and TPU VMs announce preemption with SIGTERM; a user presses Ctrl-C.
While the run starts up (data, initialisation, compilation) a signal raises
`Interrupted` in the main thread, so start-up ends at once with nothing to
save. Python runs a signal handler between two bytecodes of the main thread,
which may be inside a garbage-collection callback that swallows exceptions
(that is how a bare Ctrl-C in the first seconds got lost); the request is also
kept as a flag that the run checks between its stages, so it is never lost.
Once training has started the handler only sets the flag: the loop finishes
the current step, saves a checkpoint at it and returns. A second signal ends
the process immediately (exit status 128 + signal number).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """Raised in the main thread by a stop signal during start-up."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class StopRequest:
  """Installs the handlers for its `with` block (main thread only; elsewhere it only holds the flag)."""

  def __init__(self):
    self.signum: int | None = None
    self.raise_on_signal = True  # start-up: raise; training: only set the flag
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else ''

  def check(self) -> None:
    """Raises `Interrupted` if a stop was requested (between start-up stages)."""
    if self.signum is not None:
      raise Interrupted(self.signum)

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      print(f'\n{signal.Signals(signum).name} again: exiting now', file=sys.stderr, flush=True)
      os._exit(128 + signum)
    self.signum = signum
    if self.raise_on_signal:
      logging.warning('%s: stopping start-up (again to exit at once)', self.name)
      raise Interrupted(signum)
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


def exit_status(signum: int | None) -> int:
  """The shell's convention for a run ended by a signal: 128 + its number (0 when none)."""
  return 128 + signum if signum else 0
