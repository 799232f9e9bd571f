"""Which frames of an n-frame video make a clip of `duration` frames.

The video is cut into `duration` segments; segment i covers
`[floor(n*i/d), max(floor(n*i/d) + 1, floor(n*(i+1)/d)))`. Evaluation takes the
segment's mean, truncated; training a uniformly random element. (Integer floor
division equals the original's `int(n * i / d)`: a float quotient of two
integers never rounds across an integer.)
"""

from __future__ import annotations

import numpy as np


def segments(n: int, duration: int) -> tuple[np.ndarray, np.ndarray]:
  """Start (inclusive) and stop (exclusive) of each segment, int64 arrays of length `duration`."""
  if n <= 0 or duration <= 0:
    raise ValueError(f'need a positive frame count and clip duration, got n={n}, duration={duration}')
  i = np.arange(duration, dtype=np.int64)
  start = (n * i) // duration
  stop = np.maximum(start + 1, (n * (i + 1)) // duration)
  return start, stop


def sample_indices(n: int, duration: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """0-based frame indices (int64): segment centres without `rng`, random within segments with it."""
  start, stop = segments(n, duration)
  if rng is None:
    return (start + stop - 1) // 2
  return rng.integers(start, stop)
