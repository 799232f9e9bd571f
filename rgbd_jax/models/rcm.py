"""RCM: the recoupling module (temporal weights x channel weights) of the DTN.

Works on tokens (B, T, C). Its Linear layers act on the time axis, so the
module is built for one T (`frames`, the original's 64 = sample_duration).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models.attention import LN_EPS
from rgbd_jax.models.layers import torch_default_init


class _Project(nn.Module):
  """`project` = Linear(T->h, no bias), GELU, Linear(h->T, no bias), LayerNorm(T): children 0, 2, 3."""
  frames: int
  hidden: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, v):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    v = nn.Dense(self.hidden, use_bias=False, kernel_init=torch_default_init, name='0', **kw)(v)
    v = nn.gelu(v, approximate=False)
    v = nn.Dense(self.frames, use_bias=False, kernel_init=torch_default_init, name='2', **kw)(v)
    return nn.LayerNorm(LN_EPS, name='3', **kw)(v)


class _MergeFC(nn.Module):
  """`mergefc` = Dropout, Linear(C*heads -> C, no bias), LayerNorm(C): children 1, 2."""
  dim: int
  dropout: float = 0.4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(self.dim, use_bias=False, kernel_init=torch_default_init, name='1', **kw)(x)
    return nn.LayerNorm(LN_EPS, name='2', **kw)(x)


class RCM(nn.Module):
  """Recoupling: token t, channel c scaled by xd[t] * y[c].

  Returns (out (B, T, C), spatial_weights (B, C)): spatial_weights =
  Linear(T -> C, bias)(xd) feeds the DTN's distillation loss.
  """
  dim: int = 512
  frames: int = 64
  heads: int = 1          # the original's SEHeads
  hidden: int = 256       # 128 for a dataset named exactly 'THU'
  dim_head: int = 64
  dropout: float = 0.4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    b, t, c = tokens.shape
    if t != self.frames:
      raise ValueError(f'RCM was built for T={self.frames} frames, got T={t} '
                       '(model.sample_duration must equal the clip length)')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Temporal (sequence) weights from the channel-mean of each token.
    v = jnp.mean(tokens, axis=-1)                                        # (B, T)
    xd = jax.nn.sigmoid(_Project(self.frames, self.hidden, name='project', **kw)(v))
    # Channel weights: X = tokens^T (B, C, T); q, k = X Wq, X Wk over time.
    x = jnp.swapaxes(tokens, 1, 2)                                       # (B, C, T)
    dense = lambda name: nn.Dense(self.dim_head * self.heads, use_bias=False,
                                  kernel_init=torch_default_init, name=name, **kw)
    q = dense('q')(x).reshape(b, c, self.heads, self.dim_head)
    k = dense('k')(x).reshape(b, c, self.heads, self.dim_head)
    # mean over the query axis of (q k^T) / sqrt(d) == (mean_i q_i) . k_j / sqrt(d)
    dots = jnp.einsum('bhd,bjhd->bhj', jnp.mean(q, axis=1), k) * (self.dim_head ** -0.5)  # (B, h, C)
    if self.heads > 1:
      dots = _MergeFC(c, self.dropout, name='mergefc', **kw)(dots.reshape(b, self.heads * c), train)
    else:
      dots = dots[:, 0]
    y = jax.nn.sigmoid(dots)                                             # (B, C)
    out = tokens * xd[:, :, None] * y[:, None, :]
    spatial_weights = nn.Dense(self.dim, kernel_init=torch_default_init, name='linear', **kw)(xd)
    return out, spatial_weights
