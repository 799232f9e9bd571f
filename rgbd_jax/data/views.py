"""Multi-view testing: C temporal clips x S spatial crops of one video, scores averaged.

`--views CxS`; 1x1 is the original protocol exactly (evaluation sampling, evaluation crop).

* Temporal: the clip keeps the evaluation's segment rule (the video cut into `duration` segments,
  one frame from each), so every clip spans the whole video at the temporal scale the network was
  trained on; clip c of C takes from each segment [start, stop) of length L the frame
  `start + ((2c + 1) L - C) // (2C)`: the centre (rounded down) of the c-th of C equal parts of the
  segment. C = 1 gives `(start + stop - 1) // 2`, the evaluation's frame; for odd C the middle clip
  is that one. A video with fewer frames than C per segment repeats clips.
* Spatial: S crops of `crop_size` spread along the long side of the resized frame (width when
  square), from one edge to the other (left, centre, right for S = 3), at the evaluation crop's
  offset on the short side. S = 1 is the evaluation crop itself (centre, or NvGesture's fixed
  (32, 32)); for odd S the middle crop is that crop, the others evenly spaced between it and each
  edge; for even S they are evenly spaced from edge to edge.
"""

from __future__ import annotations

import dataclasses
import re

import ml_collections
import numpy as np

from rgbd_jax.data import sampling
from rgbd_jax.data import transforms

_SPEC = re.compile(r'^\s*(\d+)\s*[xX]\s*(\d+)\s*$')


@dataclasses.dataclass(frozen=True)
class Views:
  clips: int = 1   # C: temporal clips
  crops: int = 1   # S: spatial crops

  def __post_init__(self):
    if self.clips < 1 or self.crops < 1:
      raise ValueError(f'views must be at least 1x1, got {self.clips}x{self.crops}')

  def __len__(self) -> int:
    return self.clips * self.crops

  def __iter__(self):
    """(clip, crop) pairs, clip-major."""
    return ((c, s) for c in range(self.clips) for s in range(self.crops))

  def __str__(self) -> str:
    return f'{self.clips}x{self.crops}'

  @property
  def single(self) -> bool:
    return len(self) == 1


def parse(spec: str | Views | None) -> Views:
  """'CxS' (e.g. '3x3'); None or '' is 1x1."""
  if spec is None or spec == '':
    return Views()
  if isinstance(spec, Views):
    return spec
  m = _SPEC.match(str(spec))
  if not m:
    raise ValueError(f"--views must be CxS (temporal clips x spatial crops, e.g. 1x1 or 3x3), got {spec!r}")
  return Views(int(m.group(1)), int(m.group(2)))


def clip_indices(n: int, duration: int, clip: int = 0, clips: int = 1) -> np.ndarray:
  """0-based frame indices (int64) of temporal clip `clip` of `clips` (see the module docstring)."""
  if not 0 <= clip < clips:
    raise ValueError(f'clip {clip} out of range for {clips} clips')
  if clips == 1:
    return sampling.sample_indices(n, duration)
  start, stop = sampling.segments(n, duration)
  length = stop - start
  return start + np.maximum(((2 * clip + 1) * length - clips) // (2 * clips), 0)


def crop_params(config: ml_collections.ConfigDict, crop: int = 0, crops: int = 1) -> transforms.ClipParams:
  """The evaluation transform's parameters with crop `crop` of `crops` (see the module docstring)."""
  if not 0 <= crop < crops:
    raise ValueError(f'crop {crop} out of range for {crops} crops')
  centre = transforms.clip_params(config, False, None)
  if crops == 1:
    return centre
  rw, rh = (int(v) for v in config.dataset.resize)
  c = int(config.dataset.crop_size)
  left, top = centre.crop[:2]
  if rw >= rh:
    left = _spread(crop, crops, left, rw - c)
  else:
    top = _spread(crop, crops, top, rh - c)
  return dataclasses.replace(centre, crop=(left, top, left + c, top + c))


def _spread(i: int, n: int, middle: int, last: int) -> int:
  """Offset of crop i of n (n > 1) in [0, last]; odd n: through `middle` (the evaluation crop's)."""
  if n % 2 == 0:
    return i * last // (n - 1)
  half = n // 2
  if i <= half:
    return i * middle // half
  return middle + (i - half) * (last - middle) // half


def all_indices(n: int, duration: int, views: Views) -> np.ndarray:
  """Every frame index any clip of `views` reads, sorted, distinct."""
  return np.unique(np.concatenate([clip_indices(n, duration, c, views.clips) for c in range(views.clips)]))
