"""One sample: frame indices, per-stream uint8 clip, label.

Frames are decoded once per distinct index (a video shorter than the clip
repeats indices), transformed frame by frame with Pillow/OpenCV and gathered
into a (T, S, S, 3) uint8 clip. That is all the host does: normalisation and
the FRP heatmap run on the device inside the jitted step
(`rgbd_jax.data.on_device.model_inputs`); `dynamic_image` keeps the host
heatmap as the reference the tests compare with.
Training randomness comes from a numpy Generator that the caller seeds from
(seed, epoch, position), so a sample does not depend on worker or process count.
"""

from __future__ import annotations

import logging

import ml_collections
import numpy as np

from rgbd_jax.data import layouts
from rgbd_jax.data import sampling
from rgbd_jax.data import sources
from rgbd_jax.data import splits
from rgbd_jax.data import transforms

# Keys per stream: (uint8 clip in the batch, heatmap the step adds on the device). Unimodal
# models see 'video'/'heatmap', the fusion network both pairs.
UNIMODAL_KEYS = {'rgb': ('video', 'heatmap'), 'depth': ('video', 'heatmap')}
FUSION_KEYS = {'rgb': ('rgb', 'rgb_heatmap'), 'depth': ('depth', 'depth_heatmap')}


class BadVideoError(ValueError):
  """A video that cannot give a correct clip (missing, unreadable or inconsistent frames)."""


def load_stream_u8(config: ml_collections.ConfigDict, source: sources.Source, record: splits.VideoRecord,
                   indices: np.ndarray, stream: str, params: transforms.ClipParams,
                   rng: np.random.Generator | None) -> np.ndarray:
  """(T, S, S, 3) uint8 clip of one stream."""
  unique, inverse = np.unique(indices, return_inverse=True)
  packed = source.packed_size
  draft = tuple(int(v) for v in config.dataset.resize) if config.dataset.fast_decode and not packed else None
  transform = transforms.FrameTransform(config, params, rng)
  frames, first = [], None
  for data, where in source.read(record, unique, stream):
    img = transforms.decode(data, where, draft)
    if first is None:
      first = (img.mode, img.size, where)
      if packed and (img.mode, img.size) != ('RGB', packed):
        raise BadVideoError(f'{where}: a packed frame must be RGB {packed}, got {img.mode} {img.size}')
    elif (img.mode, img.size) != first[:2]:
      raise BadVideoError(f'{where}: frame is {img.mode} {img.size}, but {first[2]} is {first[0]} {first[1]}')
    # a packed frame is already at dataset.resize: the transform then rotates it, crops, flips, resizes
    frames.append(transform(img, where))
  clip = np.stack(frames)
  # distinct increasing indices (a video at least as long as the clip): the stack is the clip already
  return clip if np.array_equal(unique, indices) else clip[inverse]


class ClipLoader:
  """Loads sample `i` of a source for a phase; call with a Generator for training clips."""

  def __init__(self, config: ml_collections.ConfigDict, phase: str, source: sources.Source | None = None):
    self.config = config
    self.phase = phase
    self.source = source if source is not None else sources.make_source(config, phase)
    self.streams = layouts.streams(config)
    self.keys = FUSION_KEYS if layouts.is_fusion(config) else UNIMODAL_KEYS
    self.duration = int(config.model.sample_duration)
    self.size = int(config.model.sample_size)
    self.skipped = 0

  def __len__(self) -> int:
    return len(self.source.records)

  def load_u8(self, i: int, rng: np.random.Generator | None = None) -> dict:
    """Sample i: per stream (T, S, S, 3) uint8, plus indices, label, index (split-file row), name."""
    record = self.source.records[i]
    train = rng is not None
    indices = sampling.sample_indices(record.frames, self.duration, rng)
    out = {'indices': indices, 'label': record.label, 'index': record.row, 'name': record.name}
    for stream in self.streams:
      # Each stream draws its own augmentation, as the original calls its transform twice.
      params = transforms.clip_params(self.config, train, rng)
      clip = load_stream_u8(self.config, self.source, record, indices, stream, params, rng)
      out[stream] = clip
    return out

  def empty(self, i: int | None = None) -> dict:
    """A masked-out placeholder of the right shapes (padding, or a skipped video): uint8 zeros."""
    del i  # every placeholder is the same
    t, s = self.duration, self.size
    out = {'label': np.int32(0), 'mask': np.bool_(False), 'index': np.int32(-1)}
    for stream in self.streams:
      out[self.keys[stream][0]] = np.zeros((t, s, s, 3), np.uint8)
    return out

  def __call__(self, i: int, rng: np.random.Generator | None = None) -> dict:
    """Sample i as the batch carries it: (T, S, S, 3) uint8 per clip key, 'label', 'mask', 'index'."""
    try:
      raw = self.load_u8(i, rng)
    except (FileNotFoundError, ValueError) as e:
      if not self.config.dataset.skip_bad_videos:
        raise
      self.skipped += 1
      logging.warning('skipping video %r (%s entry %d): %s [%d skipped so far in this process]',
                      self.source.records[i].name, self.source.path, self.source.records[i].row, e,
                      self.skipped)
      return self.empty(i)
    out = {'label': np.int32(raw['label']), 'mask': np.bool_(True), 'index': np.int32(raw['index'])}
    for stream in self.streams:
      out[self.keys[stream][0]] = raw[stream]
    return out
