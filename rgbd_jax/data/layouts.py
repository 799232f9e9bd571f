"""Where each dataset keeps a video's frames, per stream ('rgb' or 'depth').

The rules are the original loaders': folder per video, frame files numbered
0- or 1-based, and for the fusion network a depth path derived from the RGB
path by string replacement (reproduced as the original applies it, on the whole
path, so that the same files are read).

'Custom' is the generic layout of a user's own dataset (`configs/custom.py`,
`scripts/extract_frames.py`): `<data>/rgb/<name>/%06d.jpg` and `<data>/depth/<name>/%06d.jpg` or
`.png`, 0-based.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import ml_collections

from rgbd_jax import configs

STREAMS = ('rgb', 'depth')
MODALITY = {'M': 'rgb', 'K': 'depth'}


@dataclasses.dataclass(frozen=True)
class Layout:
  folder: Callable[[str, str], str]    # (video name, stream) -> folder
  frame: Callable[[int, str], str]     # (0-based frame index, stream) -> file name in the folder


def _ntu(data: str, fusion: bool) -> Layout:
  del fusion  # the fusion network reads the depth stream from the same place

  def folder(name, stream):
    if stream == 'rgb':
      return os.path.join(data, 'Images', name)
    return os.path.join(data, 'nturgb+d_depth_masked', name[:-4])  # drops '_rgb'

  def frame(i, stream):
    return f'{i + 1:06d}.jpg' if stream == 'rgb' else f'MDepth-{i + 1:08d}.png'

  return Layout(folder, frame)


def _zero_based(i, stream):
  del stream
  return f'{i:06d}.jpg'


def _nvgesture(data: str, fusion: bool) -> Layout:
  def folder(name, stream):
    if stream == 'depth' and fusion:
      return os.path.join(data, 'rgb', name).replace('rgb', 'depth')
    return os.path.join(data, stream, name)
  return Layout(folder, _zero_based)


def _isogd(data: str, fusion: bool) -> Layout:
  def folder(name, stream):
    if stream == 'depth' and fusion:
      return os.path.join(data, 'rgb', name).replace('rgb', 'depth').replace('M', 'K')
    path = os.path.join(data, stream, name)
    return path.replace('M_', 'K_') if stream == 'depth' else path
  return Layout(folder, _zero_based)


def _thu_read(data: str, fusion: bool) -> Layout:
  def folder(name, stream):
    path = os.path.join(data, name)
    if stream == 'depth' and fusion:
      # RGB -> Depth in the folders, then Depth -> D in the last component.
      head, tail = os.path.split(path.replace('RGB', 'Depth'))
      return os.path.join(head, tail.replace('Depth', 'D'))
    return path  # unimodal depth: the depth split list names depth folders already
  return Layout(folder, _zero_based)


def _jester(data: str, fusion: bool) -> Layout:
  if fusion:
    raise ValueError('Jester has no depth stream: model.Network=FusionNet is not possible with it')

  def folder(name, stream):
    del stream
    return os.path.join(data, name)

  def frame(i, stream):
    del stream
    return f'{i + 1:05d}.jpg'

  return Layout(folder, frame)


CUSTOM_DEPTH_EXTENSIONS = ('.jpg', '.png')


def _first_frame_extension(root: str) -> str | None:
  """The extension of the first frame file found under `root` (folders in name order), or None."""
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      ext = os.path.splitext(name)[1].lower()
      if ext in CUSTOM_DEPTH_EXTENSIONS:
        return ext
  return None


def _custom(data: str, fusion: bool) -> Layout:
  """A user's dataset: `<data>/<rgb|depth>/<name>/%06d.<ext>`, 0-based; rgb frames are .jpg, depth
  frames .jpg (8-bit, 3 channels) or .png (e.g. 16-bit single channel): the extension of the first
  depth frame found, one for the whole dataset."""
  del fusion  # the depth stream lives in its own folder either way
  depth_ext = None

  def folder(name, stream):
    return os.path.join(data, stream, name)

  def frame(i, stream):
    nonlocal depth_ext
    if stream == 'rgb':
      return f'{i:06d}.jpg'
    if depth_ext is None:
      depth_ext = _first_frame_extension(os.path.join(data, 'depth')) or '.jpg'
    return f'{i:06d}{depth_ext}'

  return Layout(folder, frame)


_LAYOUTS = {
    'NTU': _ntu,
    'Synthetic': _ntu,
    'NvGesture': _nvgesture,
    'IsoGD': _isogd,
    'THUREAD': _thu_read,
    'Jester': _jester,
    'Custom': _custom,
}


def is_fusion(config: ml_collections.ConfigDict) -> bool:
  """Whether the configured network reads rgb and depth together (`configs.RGBD_NETWORKS`)."""
  return config.model.Network in configs.RGBD_NETWORKS


def streams(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The streams a sample holds: one modality, or rgb + depth for the fusion network."""
  if config.dataset.type not in MODALITY:
    raise ValueError(f"dataset.type must be 'M' (rgb) or 'K' (depth), got {config.dataset.type!r}")
  if is_fusion(config):
    if config.dataset.type != 'M':
      raise ValueError("model.Network=FusionNet needs dataset.type='M' (it reads depth beside rgb)")
    return STREAMS
  return (MODALITY[config.dataset.type],)


def layout(config: ml_collections.ConfigDict) -> Layout:
  name = config.common.dataset
  if name not in _LAYOUTS:
    raise ValueError(f'common.dataset={name!r} has no known folder layout (known: {sorted(_LAYOUTS)})')
  return _LAYOUTS[name](config.common.data, is_fusion(config))


def frame_path(lay: Layout, name: str, index: int, stream: str) -> str:
  return os.path.join(lay.folder(name, stream), lay.frame(index, stream))
