"""Per-clip augmentation parameters and the per-frame image operations.

Order, as in the original: (single-channel depth -> uint8 ROI, JET) -> rotation
(OpenCV warpAffine about the centre, full frame) -> resize to `dataset.resize`
(Pillow's default filter for `Image.resize`, bicubic) -> crop -> blur -> flip
-> resize to `model.sample_size`. Every frame of a clip shares the parameters.

Speed without changing a pixel:
* a rotation by 0 degrees is an exact identity in warpAffine and is skipped;
* resize-then-crop is done as one `Image.resize(size, box=...)` that resamples
  only the region the crop keeps. Pillow computes each output pixel from
  `box_left + (x + 0.5) * scale`; when these positions, the scale and the box
  (which Pillow passes as float32) are exactly the ones of the full resize, the
  filter taps and fixed-point weights are identical and so is every pixel.
  `_box_is_exact` checks that in float64 arithmetic before using it, and falls
  back to resize-then-crop otherwise.
Opt-in `dataset.fast_decode` lets libjpeg decode at 1/2, 1/4 or 1/8 scale
(`Image.draft`) no smaller than `dataset.resize`: much faster, close to but not
the original's pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import cv2
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageFilter

from rgbd_jax.data import depth

# Pillow's `Image.resize` default for every mode but '1'/'P' (the original passes no filter).
RESAMPLE = Image.Resampling.BICUBIC
RGB_MODES = ('RGB',)
SINGLE_CHANNEL_MODES = ('L', 'I', 'I;16', 'I;16L', 'I;16B')
# The original's GaussianBlur, drawn per frame: probability and radius range. (Its training
# script builds the validation set after the training set, which overwrites the global phase its
# blur test reads, so `Blur: True` never blurred there; every released config has it False.)
BLUR_P, BLUR_RADIUS = 0.5, (0.1, 2.0)


@dataclasses.dataclass(frozen=True)
class ClipParams:
  crop: tuple[int, int, int, int]  # (left, top, right, bottom) in the resized frame
  flip: bool
  angle: int                       # degrees, counter-clockwise (OpenCV convention)
  blur: bool                       # draw a blur per frame (training with dataset.Blur)


def _check_geometry(config: ml_collections.ConfigDict, left: int, top: int) -> None:
  rw, rh = config.dataset.resize
  c = config.dataset.crop_size
  if left < 0 or top < 0 or left + c > rw or top + c > rh:
    raise ValueError(f'dataset.crop_size={c} at ({left}, {top}) does not fit in dataset.resize={tuple(config.dataset.resize)}')


def clip_params(config: ml_collections.ConfigDict, train: bool, rng: np.random.Generator | None) -> ClipParams:
  """The original's draws: crop offset, flip, rotation (training); centre crop otherwise."""
  rw, rh = (int(v) for v in config.dataset.resize)
  c = int(config.dataset.crop_size)
  nv = config.common.dataset == 'NvGesture'
  if train:
    if rng is None:
      raise ValueError('training clips need a random generator')
    if nv:  # NvGesture: offsets from 10, upper bound inclusive
      left, top = int(rng.integers(10, rw - c + 1)), int(rng.integers(10, rh - c + 1))
    else:   # numpy randint(0, resize - crop): upper bound exclusive
      left, top = int(rng.integers(0, max(rw - c, 1))), int(rng.integers(0, max(rh - c, 1)))
    flip = bool(rng.uniform() < config.dataset.flip)
    angle = 0
    if rng.uniform() < config.dataset.rotated:
      lo, hi = config.dataset.angle
      angle = int(rng.integers(lo, hi))
    blur = bool(config.dataset.Blur)
  else:
    left, top = (32, 32) if nv else ((rw - c) // 2, (rh - c) // 2)
    flip, angle, blur = False, 0, False
  _check_geometry(config, left, top)
  return ClipParams((left, top, left + c, top + c), flip, angle, blur)


def decode(data: bytes, where: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
  """Pillow decode of one encoded frame; errors name the frame."""
  try:
    img = Image.open(io.BytesIO(data))
    if draft_size is not None and img.format == 'JPEG':
      img.draft(img.mode, draft_size)
    img.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'{where}: cannot decode the frame ({type(e).__name__}: {e})') from None
  return img


def rotate(frame: np.ndarray, angle: int) -> np.ndarray:
  """The original's rotation: OpenCV warpAffine about the centre (bilinear, black border)."""
  h, w = frame.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
  return cv2.warpAffine(frame, m, (w, h))


def rotate_rgb(img: Image.Image, angle: int) -> Image.Image:
  """`rotate` of an RGB image, Pillow in and out, through a 4-channel RGBX array.

  Pillow keeps RGB pixels as 4 bytes, so RGBX leaves and enters it with one plain copy each, and
  OpenCV's warpAffine is about twice as fast on 4 channels as on 3; each channel is interpolated
  on its own, so the first three are those of the 3-channel warp (tests check it bit for bit).
  """
  w, h = img.size
  x = np.frombuffer(img.tobytes('raw', 'RGBX'), np.uint8).reshape(h, w, 4)
  m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
  return Image.frombytes('RGB', (w, h), cv2.warpAffine(x, m, (w, h)), 'raw', 'RGBX')


@functools.lru_cache(maxsize=256)
def _box_is_exact(in_size: int, out_size: int, lo: int, n: int) -> bool:
  """True when resampling `n` outputs from offset `lo` equals the full resize's pixels lo..lo+n."""
  scale = in_size / out_size
  b0, b1 = lo * scale, (lo + n) * scale
  if float(np.float32(b0)) != b0 or float(np.float32(b1)) != b1:
    return False  # Pillow hands the box to C as float32
  if (b1 - b0) / n != scale:
    return False
  x = np.arange(n, dtype=np.float64)
  return bool(np.array_equal(b0 + (x + 0.5) * scale, (x + lo + 0.5) * scale))


def resize_crop(img: Image.Image, size: tuple[int, int], crop: tuple[int, int, int, int]) -> Image.Image:
  """`img.resize(size).crop(crop)`, bit for bit, resampling only the kept region when exact."""
  if img.size == tuple(size):
    return img.crop(crop)
  (w, h), (rw, rh) = img.size, size
  left, top, right, bottom = crop
  if _box_is_exact(w, rw, left, right - left) and _box_is_exact(h, rh, top, bottom - top):
    sx, sy = w / rw, h / rh
    return img.resize((right - left, bottom - top), RESAMPLE,
                      box=(left * sx, top * sy, right * sx, bottom * sy))
  return img.resize(size, RESAMPLE).crop(crop)


def check_mode(img: Image.Image, where: str) -> None:
  if img.mode not in RGB_MODES and img.mode not in SINGLE_CHANNEL_MODES:
    raise ValueError(f'{where}: unsupported image mode {img.mode!r} '
                     f'(expected RGB or a single-channel depth mode {SINGLE_CHANNEL_MODES})')


def pack_frame(img: Image.Image, where: str, size: tuple[int, int]) -> Image.Image:
  """A decoded frame as the packed training format stores it: the 3-channel image the pipeline sees
  (single-channel depth: ROI + JET, as `FrameTransform`), resized to `size` = `dataset.resize` with
  the loader's Pillow filter. The rotation, which the original applies before this resize, is left
  to the loader (it then acts on the resized frame)."""
  check_mode(img, where)
  if img.mode in SINGLE_CHANNEL_MODES:
    img = Image.fromarray(depth.depth_to_rgb(np.asarray(img), where))
  return img if img.size == tuple(size) else img.resize(tuple(size), RESAMPLE)


class FrameTransform:
  """Decoded frame -> (S, S, 3) uint8, for one clip's parameters."""

  def __init__(self, config: ml_collections.ConfigDict, params: ClipParams,
               rng: np.random.Generator | None = None):
    self.resize = tuple(int(v) for v in config.dataset.resize)
    self.size = int(config.model.sample_size)
    self.params = params
    self.rng = rng
    if params.blur and rng is None:
      raise ValueError('blur needs a random generator')

  def __call__(self, img: Image.Image, where: str) -> np.ndarray:
    p = self.params
    check_mode(img, where)
    pil = img
    if img.mode in SINGLE_CHANNEL_MODES:
      pil = Image.fromarray(depth.depth_to_rgb(np.asarray(img), where))
    if p.angle:
      pil = rotate_rgb(pil, p.angle)
    pil = resize_crop(pil, self.resize, p.crop)  # a packed frame (already at `resize`): the crop only
    if p.blur and self.rng.uniform() <= BLUR_P:
      pil = pil.filter(ImageFilter.GaussianBlur(radius=self.rng.uniform(*BLUR_RADIUS)))
    if p.flip:
      pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if pil.size != (self.size, self.size):
      pil = pil.resize((self.size, self.size), RESAMPLE)
    return np.asarray(pil)


def normalise(clip_u8: np.ndarray) -> np.ndarray:
  """(u8 - 127.5) / 128 in float32 (exact: both steps are exact in float32)."""
  out = np.subtract(clip_u8, np.float32(127.5), dtype=np.float32)
  out *= np.float32(1 / 128)
  return out
