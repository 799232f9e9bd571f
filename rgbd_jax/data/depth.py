"""The original's treatment of single-channel (masked, 16-bit) depth frames.

1. `np.uint8(255 * img)` computed in the frame's own integer type: it wraps, so
   the result is `-depth mod 256` (a banded image, not a scaled one). Kept as is:
   the released models were trained on it.
2. A 320x240 region of interest around the objects: contours of the eroded and
   dilated image with area > 500, the minimum (separately in x and y) of their
   rotated-rectangle centres as the ROI centre.
3. OpenCV's JET colormap, whose BGR output is used as if it were RGB.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

ROI_SIZE = (320, 240)      # (width, height)
MIN_CONTOUR_AREA = 500
_fallbacks = [0]  # frames that needed the centre fallback, in this process


def wrap_to_u8(frame: np.ndarray) -> np.ndarray:
  """`uint8(255 * frame)` with the multiplication in the frame's own (integer) dtype."""
  if not np.issubdtype(frame.dtype, np.integer):
    raise ValueError(f'single-channel depth frame must be integer, got dtype {frame.dtype}')
  return np.multiply(frame, frame.dtype.type(255), dtype=frame.dtype).astype(np.uint8)


def roi_centre(u8: np.ndarray, where: str = '') -> tuple[int, int]:
  """(x, y) centre of the objects; the frame centre, with a warning, where no contour is large enough."""
  mask = cv2.erode(u8, np.ones((3, 3), np.uint8))
  mask = cv2.dilate(mask, np.ones((10, 10), np.uint8))
  contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
  centres = [cv2.minAreaRect(c)[0] for c in contours if cv2.contourArea(c) > MIN_CONTOUR_AREA]
  if not centres:
    # The original crashes here (min over an empty array). Logged, but not for every frame of a
    # dataset where it is common (small frames): the first few, then every 1000th.
    _fallbacks[0] += 1
    if _fallbacks[0] <= 5 or _fallbacks[0] % 1000 == 0:
      logging.warning('depth frame %s: no contour with area > %d; ROI centred on the frame instead '
                      '(%d such frames so far in this process)', where or '(unnamed)', MIN_CONTOUR_AREA,
                      _fallbacks[0])
    return u8.shape[1] // 2, u8.shape[0] // 2
  c = np.array(centres).astype(np.intp)  # truncation toward zero, as np.int0
  return int(c[:, 0].min()), int(c[:, 1].min())


def roi_crop(u8: np.ndarray, where: str = '') -> np.ndarray:
  h, w = u8.shape
  cx, cy = roi_centre(u8, where)
  left = max(cx - ROI_SIZE[0] // 2, 0)
  top = max(cy - ROI_SIZE[1] // 2, 0)
  return u8[top:min(top + ROI_SIZE[1], h), left:min(left + ROI_SIZE[0], w)]


def colorize(u8: np.ndarray) -> np.ndarray:
  """JET colormap; the BGR channel order is kept (the original feeds it on as RGB)."""
  return cv2.applyColorMap(np.ascontiguousarray(u8), cv2.COLORMAP_JET)


def depth_to_rgb(frame: np.ndarray, where: str = '') -> np.ndarray:
  """A single-channel depth frame -> the 3-channel uint8 image the rest of the pipeline sees."""
  return colorize(roi_crop(wrap_to_u8(frame), where))
