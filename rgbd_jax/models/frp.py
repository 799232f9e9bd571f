"""FRP: the dynamic-motion (rank-pooling heatmap) attention of the spatial stem.

One module, shared by the three places it is applied (after Mixed_3b, 4b, 5b).
Its only variable is torch's `frp_module.rpconv1d.weight` (1, 2, 1): a
Conv1d(2 -> 1, kernel 1) that mixes the feature map x with x * (1 + g).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def pool_heatmap_to(heat: jax.Array, width: int) -> jax.Array:
  """Repeated floor 2x2 max pools of (N, H, W, 1) frames until W <= `width`.

  The original compares widths only (its feature maps and heatmaps are square);
  the loop runs over static shapes, never over frames.
  """
  while heat.shape[2] > width:
    n, h, w, c = heat.shape
    heat = heat[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  return heat


class RPConv1d(nn.Module):
  """The Conv1d(2, 1, 1, bias=False) weight; initialised to [1, 0] as the original."""
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    init = lambda key, shape, dtype: jnp.array([[[1.0], [0.0]]], dtype)
    return self.param('weight', init, (1, 2, 1), self.param_dtype)


class FRP(nn.Module):
  """Returns w0 * x + w1 * x * (1 + g), g the heatmap pooled to x's size.

  x: (N, h, w, C) frames; heat: (N, h, w, 1) already pooled (`pool_heatmap_to`).
  With a window `w` < 1 the original's FRP returns x unchanged.
  """
  w: int = 10
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, heat: jax.Array) -> jax.Array:
    weight = RPConv1d(self.param_dtype, name='rpconv1d')()
    if self.w < 1:
      return x
    if heat.shape[1:3] != x.shape[1:3]:
      raise ValueError(f'FRP heatmap {heat.shape[1:3]} does not match the feature map {x.shape[1:3]}; '
                       'H and W must be multiples of 32')
    w0, w1 = weight[0, 0, 0].astype(x.dtype), weight[0, 1, 0].astype(x.dtype)
    return w0 * x + w1 * (x * (heat.astype(x.dtype) + 1))
