"""The FRP heatmap ("dynamic image") of a clip, vectorised over all windows.

For each window of `w` consecutive frames the original rank-pools the
normalised frames with weights `2j - w - 1` (j = 1..w), applies ReLU, min-max
normalises the result over the whole window map (all three channels), converts
it to grey (0.2989, 0.587, 0.114); a static map keeps the values above the
grey map's mean, eroded by a 2x2 and dilated by a 3x3 rectangle, min-max
normalised. The heatmap of frame t is `(grey + static) * static` of the window
ending at t; the first `w - 1` frames are zero.

Everything here is computed for all windows at once:
* the weights sum to zero, so rank pooling of `(u8 - 127.5) / 128` equals
  `sum_j c_j u8_j / 128`, an exact integer correlation over time (OpenCV
  `filter2D` down the time axis, int16 output: |sum| <= 255 * w^2 / 2); the
  1/128 disappears in the min-max normalisation;
* min-max normalisation and grey conversion are linear, so the grey map is
  computed from the integer map and normalised afterwards;
* the morphology runs on all window maps stacked into one tall image, with a
  separator row that is neutral for erosion (+inf) and then for dilation (-inf).
"""

from __future__ import annotations

import cv2
import numpy as np

GRAY = np.array([0.2989, 0.587, 0.114], np.float32)  # torchvision's rgb_to_grayscale weights
_ERODE = cv2.getStructuringElement(cv2.MORPH_RECT, (2, 2))
_DILATE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
_EPS = np.float32(1e-5)  # the original divides an all-zero map by (0 + 1e-5)


def rank_pool_weights(w: int) -> np.ndarray:
  return (2 * np.arange(1, w + 1) - w - 1).astype(np.float32)


def _minmax_scale(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """1 / (max - min), or 0 where the map is constant (the original's result is then all zero)."""
  span = (hi - lo).astype(np.float32)
  return np.where(span > 0, 1.0 / np.where(span > 0, span, 1), 0).astype(np.float32)


def heatmap(clip_u8: np.ndarray, w: int) -> np.ndarray:
  """(T, H, W, 3) uint8 clip -> (T, H, W) float32 heatmap."""
  if clip_u8.dtype != np.uint8 or clip_u8.ndim != 4 or clip_u8.shape[-1] != 3:
    raise ValueError(f'expected a (T, H, W, 3) uint8 clip, got {clip_u8.dtype} {clip_u8.shape}')
  if w < 1:
    raise ValueError(f'heatmap window w must be >= 1, got {w}')
  t, h, wd, _ = clip_u8.shape
  out = np.zeros((t, h, wd), np.float32)
  k = t - w + 1  # windows that survive the shift by w - 1 frames (all of full length)
  if k <= 0:
    return out

  # Rank pooling of every window: a correlation down the time axis.
  flat = np.ascontiguousarray(clip_u8).reshape(t, h * wd * 3)
  pooled = cv2.filter2D(flat, cv2.CV_16S, rank_pool_weights(w).reshape(w, 1), anchor=(0, 0),
                        borderType=cv2.BORDER_CONSTANT)[:k]
  np.maximum(pooled, 0, out=pooled)  # ReLU
  lo, hi = pooled.min(axis=1), pooled.max(axis=1)
  scale = _minmax_scale(lo, hi)

  # Grey map of the min-max normalised window map, from the integer map. Row 0 of each
  # window is a separator for the morphology below.
  grey = np.empty((k, h + 1, wd), np.float32)
  grey[:, 1:] = cv2.transform(pooled.reshape(k * h, wd, 3).astype(np.float32),
                              GRAY.reshape(1, 3)).reshape(k, h, wd)
  grey[:, 1:] -= (lo.astype(np.float32) * GRAY.sum())[:, None, None]
  grey[:, 1:] *= scale[:, None, None]
  body = grey[:, 1:]

  # Static attention: values above the window's mean, opened-like (erode 2x2, dilate 3x3).
  stack = np.empty_like(grey)
  stack[:, 0] = np.inf
  np.multiply(body, body > body.mean(axis=(1, 2), keepdims=True), out=stack[:, 1:])
  stack = cv2.erode(stack.reshape(k * (h + 1), wd), _ERODE).reshape(k, h + 1, wd)
  stack[:, 0] = -np.inf
  stack = cv2.dilate(stack.reshape(k * (h + 1), wd), _DILATE).reshape(k, h + 1, wd)
  static = stack[:, 1:]
  s_lo = static.min(axis=(1, 2))
  s_hi = static.max(axis=(1, 2))
  static -= s_lo[:, None, None]
  static *= _minmax_scale(s_lo, s_hi)[:, None, None]

  out[w - 1:] = (body + static) * static
  return out
