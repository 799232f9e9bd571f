"""Where a video's encoded frames come from: the original folders, or a TFDS build.

Both hand out the same thing, the frame files' bytes, so the pixels that come
out of decoding are the same whichever source is used. The exception is the
packed training build (`dataset.packed`, see `tfds_builder`): its frames are
already resized to `dataset.resize` and re-encoded; the training loader reads it
when `dataset.packed` is set, evaluation never does.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import ml_collections

from rgbd_jax.data import layouts
from rgbd_jax.data import splits


class Source(Protocol):
  records: list[splits.VideoRecord]   # usable videos (> 16 frames), split-file order
  path: str                           # what to name in messages
  packed_size: tuple[int, int] | None  # (w, h) of a packed build's frames, else None

  def read(self, record: splits.VideoRecord, indices: Sequence[int],
           stream: str) -> list[tuple[bytes, str]]:
    """(encoded bytes, where) of frames `indices` (0-based) of one stream."""


class FolderSource:
  """Frames as files in the dataset's original folder layout."""

  packed_size = None

  def __init__(self, config: ml_collections.ConfigDict, phase: str):
    self.path = splits.split_file(config, phase)
    self.records = splits.usable(splits.read_split(self.path), self.path)
    self.layout = layouts.layout(config)
    if not config.common.data:
      raise ValueError('config.common.data is empty: set it to the dataset root')

  def read(self, record, indices, stream):
    out = []
    for i in indices:
      file = layouts.frame_path(self.layout, record.name, int(i), stream)
      try:
        with open(file, 'rb') as f:
          out.append((f.read(), file))
      except FileNotFoundError:
        raise FileNotFoundError(
            f'frame {int(i)} of video {record.name!r} ({self.path} entry {record.row}, '
            f'{record.frames} frames) not found: {file}') from None
      except OSError as e:
        raise ValueError(f'{file}: cannot read the frame ({e})') from None
    return out


class TfdsSource:
  """Frames from `scripts/prepare_tfds.py`'s array_record build (the frames' original bytes, or with
  `packed` the packed training build's resized JPEGs)."""

  def __init__(self, config: ml_collections.ConfigDict, phase: str, packed: bool = False):
    from rgbd_jax.data import tfds_builder  # tensorflow_datasets is imported only when used
    self.path = tfds_builder.build_dir(config, packed=packed)
    entries = tfds_builder.read_entries(self.path, phase)
    info = tfds_builder.read_packed(self.path)
    if packed != (info is not None):
      raise ValueError(f'{self.path}: expected a {"packed" if packed else "non-packed"} build')
    self.packed_size = None
    if info is not None:
      self.packed_size = tuple(int(v) for v in info['size'])
      if self.packed_size != tfds_builder.packed_size(config):
        raise ValueError(f'{self.path}: packed at {self.packed_size}, but dataset.resize is '
                         f'{tuple(config.dataset.resize)}')
    self.records = splits.usable([e for e, _ in entries], f'{self.path} split {phase!r}')
    self._position = {e.row: pos for e, pos in entries}
    self._phase = phase
    self._source = None  # opened lazily, once per worker process

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None
    return state

  def read(self, record, indices, stream):
    from rgbd_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top (tensorflow_datasets when used)
    if self._source is None:
      self._source = tfds_builder.open_split(self.path, self._phase)
    position = self._position[record.row]
    example = self._source[position]
    name = example['name']
    name = name.decode() if isinstance(name, bytes) else str(name)
    where = f'{self.path} split {self._phase} record {position} ({record.name})'
    if name != record.name:
      raise ValueError(f'{where}: holds video {name!r}')
    key = tfds_builder.frames_key(stream)
    if key not in example:
      raise ValueError(f'{where}: no {stream} frames in this build')
    frames = example[key]
    out = []
    for i in indices:
      if not 0 <= int(i) < len(frames):
        raise ValueError(f'{where}: frame {int(i)} requested, the record holds {len(frames)}')
      out.append((frames[int(i)], f'{where} frame {int(i)}'))
    return out




def reads_build(config: ml_collections.ConfigDict, phase: str) -> bool:
  """True when `phase` reads a TFDS build (common.source='tfds', or packed training)."""
  return config.common.source == 'tfds' or (phase == 'train' and bool(config.dataset.packed))


def make_source(config: ml_collections.ConfigDict, phase: str) -> Source:
  if phase == 'train' and config.dataset.packed:
    if not config.common.tfds_data_dir:
      raise ValueError('dataset.packed=True trains from the packed build: set common.tfds_data_dir (the '
                       '--data-dir of prepare_tfds.py --packed)')
    return TfdsSource(config, phase, packed=True)
  if config.common.source == 'folder':
    return FolderSource(config, phase)
  if config.common.source == 'tfds':
    if not config.common.tfds_data_dir:
      raise ValueError("common.source='tfds' needs common.tfds_data_dir (the --data-dir of prepare_tfds.py)")
    return TfdsSource(config, phase)
  raise ValueError(f"common.source must be 'folder' or 'tfds', got {config.common.source!r}")
