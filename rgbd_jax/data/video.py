"""Reading a user's videos: video files and frame folders, with errors that name the file.

* Video files (mp4, avi, webm, mkv, mov, ...) are decoded with PyAV when it is installed (its
  `rgb24` conversion), else with OpenCV's `VideoCapture` (BGR, converted to RGB); `backend()` says
  which runs. Both go through FFmpeg's decoders and swscale: on MJPG, MPEG-4, VP9 and H.264
  (yuv420p) test videos they gave the same pixels. Rotation metadata (portrait phone videos) is
  applied by neither (OpenCV's auto-orientation is switched off to match): rotate such a video
  first. Frames are counted by decoding, not from the container's header (which can be wrong),
  and a second pass keeps only the frames a clip needs, so a long video never sits in memory whole.
* Frame folders hold one image per frame (jpg, png, bmp), named with a number (`000000.jpg`,
  `MDepth-00000001.png`, ...), one prefix and one extension, numbered without gaps from any start:
  frame i of the video is the i-th file in numeric order.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Iterator

import cv2
import numpy as np

try:  # optional: OpenCV is the fall-back
  import av  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - depends on the installation
  av = None

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.ogv')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_NUMBERED = re.compile(r'^(.*?)(\d+)(\.(?:jpe?g|png|bmp))$', re.IGNORECASE)
MAX_LISTED = 5


class VideoError(ValueError):
  """A video or frame folder that cannot be read (missing, empty, corrupt, numbered with gaps)."""


def backend() -> str:
  """'pyav' when PyAV is installed, else 'opencv'."""
  return 'pyav' if av is not None else 'opencv'


def is_video_file(path: str | os.PathLike) -> bool:
  return os.path.isfile(path) and os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


# ------------------------------------------------------------------------------ video files

def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise FileNotFoundError(f'video not found: {path}')
  if not os.path.isfile(path):
    raise VideoError(f'{path}: not a file')
  if os.path.getsize(path) == 0:
    raise VideoError(f'{path}: empty file (0 bytes)')


def _frames_pyav(path: str) -> Iterator[np.ndarray | None]:
  """Yields each frame as RGB uint8, or None for a frame not wanted (see `iter_frames`)."""
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise VideoError(f'{path}: cannot open the video ({e})') from None
  with container:
    if not container.streams.video:
      raise VideoError(f'{path}: the file has no video stream')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    n = 0
    try:
      for frame in container.decode(stream):
        want = yield frame  # the caller asks for the pixels with `send(True)`
        if want:
          yield frame.to_ndarray(format='rgb24')
        n += 1
    except (av.error.FFmpegError, ValueError) as e:
      raise VideoError(f'{path}: decoding failed after {n} frames ({e})') from None


def _frames_opencv(path: str) -> Iterator[np.ndarray | None]:
  cap = cv2.VideoCapture(path)
  try:
    if not cap.isOpened():
      raise VideoError(f'{path}: cannot open the video (OpenCV VideoCapture refused it)')
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # as PyAV: the stored frames, rotation metadata ignored
    while cap.grab():
      want = yield None
      if want:
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
          raise VideoError(f'{path}: frame could not be decoded')
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
  finally:
    cap.release()


def _frame_iterator(path: str, use: str | None) -> Iterator:
  use = use or backend()
  if use == 'pyav':
    if av is None:
      raise VideoError('PyAV is not installed (pip install av); use the OpenCV backend')
    return _frames_pyav(path)
  if use == 'opencv':
    return _frames_opencv(path)
  raise ValueError(f"video backend must be 'pyav' or 'opencv', got {use!r}")


def _walk(path: str, wanted, use: str | None) -> Iterator[tuple[int, np.ndarray | None]]:
  """(index, RGB frame if wanted(index) else None) for every frame of the video."""
  gen = _frame_iterator(path, use)
  i = 0
  for _ in gen:
    if wanted(i):
      frame = gen.send(True)
      yield i, frame
    else:
      yield i, None
    i += 1


def count_frames(path: str | os.PathLike, use: str | None = None) -> int:
  """Frames that decode (not the container's count); 0 frames is an error naming the file."""
  path = os.fspath(path)
  _check_file(path)
  n = sum(1 for _ in _walk(path, lambda i: False, use))
  if n == 0:
    raise VideoError(f'{path}: no frame could be decoded (an empty or unreadable video)')
  return n


def iter_frames(path: str | os.PathLike, use: str | None = None) -> Iterator[np.ndarray]:
  """Every frame, RGB uint8 (H, W, 3), in order; errors name the file."""
  path = os.fspath(path)
  _check_file(path)
  n = 0
  for _, frame in _walk(path, lambda i: True, use):
    n += 1
    yield frame
  if n == 0:
    raise VideoError(f'{path}: no frame could be decoded (an empty or unreadable video)')


def read_frames(path: str | os.PathLike, indices: Iterable[int], use: str | None = None
                ) -> dict[int, np.ndarray]:
  """{index: RGB uint8 frame} of the 0-based `indices`; an index past the end is an error."""
  path = os.fspath(path)
  _check_file(path)
  wanted = set(int(i) for i in indices)
  out, n = {}, 0
  for i, frame in _walk(path, wanted.__contains__, use):
    n = i + 1
    if frame is not None:
      out[i] = frame
    if len(out) == len(wanted):
      break
  missing = sorted(wanted - set(out))
  if missing:
    raise VideoError(f'{path}: frame {missing[0]} asked for, but only {n} frames decode '
                     '(did the file change since it was counted?)')
  return out


def fps(path: str | os.PathLike) -> float | None:
  """The container's frame rate, or None when it does not say (for GIFs and messages)."""
  path = os.fspath(path)
  try:
    if av is not None:
      with av.open(path) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else None
    cap = cv2.VideoCapture(path)
    try:
      rate = cap.get(cv2.CAP_PROP_FPS)
    finally:
      cap.release()
    return float(rate) if rate and rate > 0 else None
  except Exception:  # pylint: disable=broad-except  # only a hint
    return None


# ---------------------------------------------------------------------------- frame folders

def list_frame_folder(folder: str | os.PathLike) -> list[str]:
  """The frame files of a folder in frame order; errors name the folder and what is wrong."""
  folder = os.fspath(folder)
  if not os.path.exists(folder):
    raise FileNotFoundError(f'frame folder not found: {folder}')
  if not os.path.isdir(folder):
    raise VideoError(f'{folder}: not a folder')
  images = [n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
  if not images:
    raise VideoError(f'{folder}: no frame images ({", ".join(IMAGE_EXTENSIONS)}) in the folder')
  numbered, kinds = {}, {}
  for name in images:
    m = _NUMBERED.match(name)
    if not m:
      raise VideoError(f'{folder}: frame file {name!r} has no frame number (expected e.g. 000000.jpg)')
    prefix, number, ext = m.groups()
    kinds.setdefault((prefix, ext.lower()), name)
    number = int(number)
    if number in numbered:
      raise VideoError(f'{folder}: frame number {number} twice ({numbered[number]!r} and {name!r})')
    numbered[number] = name
  if len(kinds) > 1:
    examples = ', '.join(repr(v) for v in list(kinds.values())[:3])
    raise VideoError(f'{folder}: frame files of different names or types ({examples}); '
                     'one prefix and one extension per folder')
  numbers = sorted(numbered)
  first, last = numbers[0], numbers[-1]
  if last - first + 1 != len(numbers):
    missing = sorted(set(range(first, last + 1)) - set(numbers))
    shown = ', '.join(str(k) for k in missing[:MAX_LISTED]) + (', ...' if len(missing) > MAX_LISTED else '')
    raise VideoError(f'{folder}: frames are numbered with gaps: {len(missing)} missing between {first} '
                     f'and {last} ({shown}); renumber the frames or extract the video again')
  return [os.path.join(folder, numbered[k]) for k in numbers]
