"""The spatial stem: I3D Inception-v1 with 2-D kernels, FRP after Mixed_3b/4b/5b.

Endpoints are direct children of the unimodal network (torch keys
`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b0.bn.running_mean`, ...), so this file
holds the endpoint table and the function that runs it; `recognizer.DSNNet`
owns the modules.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rgbd_jax.models.frp import pool_heatmap_to
from rgbd_jax.models.ops.pool import max_pool_same

# (name, kind, spec): 'unit' (features, kernel, stride), 'pool' (window, stride), 'mixed' widths.
ENDPOINTS = (
    ('Conv3d_1a_7x7', 'unit', (64, (7, 7), 2)),
    ('MaxPool3d_2a_3x3', 'pool', ((3, 3), 2)),
    ('Conv3d_2b_1x1', 'unit', (64, (), 1)),
    ('Conv3d_2c_3x3', 'unit', (192, (3, 3), 1)),
    ('MaxPool3d_3a_3x3', 'pool', ((3, 3), 2)),
    ('Mixed_3b', 'mixed', (64, 96, 128, 16, 32, 32)),
    ('Mixed_3c', 'mixed', (128, 128, 192, 32, 96, 64)),
    ('MaxPool3d_4a_3x3', 'pool', ((3, 3), 2)),
    ('Mixed_4b', 'mixed', (192, 96, 208, 16, 48, 64)),
    ('Mixed_4c', 'mixed', (160, 112, 224, 24, 64, 64)),
    ('MaxPool3d_5a_2x2', 'pool', ((2, 2), 2)),
    ('Mixed_5b', 'mixed', (256, 160, 320, 32, 128, 128)),
    ('Mixed_5c', 'mixed', (384, 192, 384, 48, 128, 128)),
)
FRP_AFTER = ('Mixed_3b', 'Mixed_4b', 'Mixed_5b')


def scaled(c: int, width: float) -> int:
  """A stem width times the width multiplier (the original: 1.0)."""
  return c if width == 1.0 else max(1, int(round(c * width)))


def stem_widths(width: float) -> dict[str, tuple]:
  """Per endpoint with variables: its (scaled) widths."""
  out = {}
  for name, kind, spec in ENDPOINTS:
    if kind == 'unit':
      out[name] = (scaled(spec[0], width),) + tuple(spec[1:])
    elif kind == 'mixed':
      out[name] = tuple(scaled(c, width) for c in spec)
  return out


def run_stem(modules: dict[str, Callable], frp: Callable | None, video: jax.Array,
             heatmap: jax.Array | None, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Runs the endpoints on video (B, T, H, W, 3); returns per-frame features (B, T, h, w, C).

  `modules[name](x, train)` runs an endpoint with variables: units on frames
  (B*T, H, W, C), inception blocks on (B, T, H, W, C). Also returns
  `chanmean_<endpoint>` (B, C): each endpoint's own output (before the FRP
  residual) averaged over T, H, W.
  """
  b, t, h, w, c = video.shape
  x = video.reshape(b * t, h, w, c)
  heat = None if heatmap is None else heatmap.reshape(b * t, h, w, 1)
  means = {}
  for name, kind, spec in ENDPOINTS:
    if kind == 'unit':
      x = modules[name](x, train)
    elif kind == 'pool':
      window, stride = spec
      x = max_pool_same(x, window, (stride, stride))
    else:
      x = modules[name](x.reshape(b, t, *x.shape[1:]), train).reshape(b * t, *x.shape[1:3], -1)
    means[f'chanmean_{name}'] = jnp.mean(x.reshape(b, -1, x.shape[-1]), axis=1)
    if frp is not None and name in FRP_AFTER:
      if heat is not None:  # None only when FRP is the identity (window w < 1)
        heat = pool_heatmap_to(heat, x.shape[2])
      x = frp(x, heat) + x
  return x.reshape(b, t, *x.shape[1:]), means
