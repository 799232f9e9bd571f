"""Expected user errors in the scripts: one line `error: ...` and a non-zero exit, not a traceback.

A path that does not exist, a file that is not a checkpoint, an empty workdir, a
bad value: the library raises ValueError / FileNotFoundError / RuntimeError
with a message that names the file, key or value. The scripts print that
message alone; `--traceback` (or RGBD_JAX_TRACEBACK=1) shows the traceback too,
for bugs.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from absl import flags

EXPECTED = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError)

_TRACEBACK = flags.DEFINE_bool('traceback', False, 'On a bad input or setting, print the traceback too '
                               '(default: the one-line message).')


def one_line_errors(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
  """Wraps an absl `main`: expected errors print `error: <message>` and exit with status 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except EXPECTED as e:
      if _TRACEBACK.value or os.environ.get('RGBD_JAX_TRACEBACK') == '1':
        raise
      print(f'error: {e}', file=sys.stderr)
      return 1

  return wrapped
