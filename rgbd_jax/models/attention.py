"""kNN attention and the pre-norm Transformer layer of the DTN branches.

Variable names follow the original's modules: a layer is `0` (PreNorm over
Attention: `norm`, `fn.to_qkv`, `fn.to_out.0`) and `1` (PreNorm over
FeedForward: `norm`, `fn.fc1`, `fn.fc2`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from rgbd_jax.models.layers import torch_default_init

LN_EPS = 1e-5  # torch's LayerNorm default (Flax's is 1e-6)


def knn_keep(n: int, knn_attention: float) -> int:
  """How many keys each query keeps: int(n * knn_attention), as torch.topk's k."""
  return int(n * knn_attention)


def knn_mask(dots: jax.Array, k: int) -> jax.Array:
  """Boolean mask of the k largest entries of each row (last axis), exactly k per row.

  Selected by index (lax.top_k), like torch.topk + scatter: ties cannot make
  the mask keep more than k entries.
  """
  n = dots.shape[-1]
  _, idx = lax.top_k(dots, k)
  # rank-1 scatter via a one-hot sum; n <= 49 in the network, so this is tiny.
  return jnp.any(idx[..., :, None] == jnp.arange(n), axis=-2)


class Attention(nn.Module):
  """Multi-head self-attention with optional kNN (top-k) score masking."""
  dim: int
  heads: int = 8
  dim_head: int = 64
  dropout: float = 0.1
  knn_attention: float = 0.7
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, n, _ = x.shape
    inner = self.heads * self.dim_head
    dense = lambda f, bias, name: nn.Dense(f, use_bias=bias, dtype=self.dtype, param_dtype=self.param_dtype,
                                           kernel_init=torch_default_init, name=name)
    qkv = dense(3 * inner, False, 'to_qkv')(x)
    q, k, v = jnp.split(qkv.reshape(b, n, 3, self.heads, self.dim_head), 3, axis=2)
    q, k, v = (t[:, :, 0] for t in (q, k, v))  # (b, n, h, d)
    dots = jnp.einsum('bihd,bjhd->bhij', q, k) * (self.dim_head ** -0.5)
    if self.knn_attention:
      keep = knn_keep(n, self.knn_attention)
      if keep < 1:
        raise ValueError(f'knn_attention={self.knn_attention} keeps no token of a branch with {n} tokens')
      dots = jnp.where(knn_mask(dots, keep), dots, -jnp.inf)
    attn = jax.nn.softmax(dots.astype(jnp.promote_types(dots.dtype, jnp.float32)), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, n, inner)
    if self.heads == 1 and self.dim_head == self.dim:
      return out  # the original's Identity projection in this case
    out = ToOut(self.dim, self.dtype, self.param_dtype, name='to_out')(out)
    return nn.Dropout(self.dropout, deterministic=not train)(out)


class ToOut(nn.Module):
  """`to_out` = Sequential(Linear, Dropout): the Linear is its child `0`."""
  dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.dim, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=torch_default_init, name='0')(x)


class FeedForward(nn.Module):
  """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""
  dim: int
  hidden: int = 768
  dropout: float = 0.1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = lambda f, name: nn.Dense(f, dtype=self.dtype, param_dtype=self.param_dtype,
                                     kernel_init=torch_default_init, name=name)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    x = drop(nn.gelu(dense(self.hidden, 'fc1')(x), approximate=False))
    return drop(dense(self.dim, 'fc2')(x))


class PreNorm(nn.Module):
  """LayerNorm (eps 1e-5) then the wrapped block, named `norm` and `fn`."""
  fn: nn.Module
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.LayerNorm(LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name='norm')(x)
    return self.fn(y, train)


class TransformerLayer(nn.Module):
  """x = Attn(LN(x)) + x; x = FF(LN(x)) + x."""
  dim: int
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  knn_attention: float = 0.7
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Created unbound (parent=None) so each PreNorm adopts its block under the name `fn`.
    attn = Attention(self.dim, self.heads, self.dim_head, self.dropout, self.knn_attention, parent=None, **kw)
    ff = FeedForward(self.dim, self.mlp_dim, self.dropout, parent=None, **kw)
    x = PreNorm(attn, name='0', **kw)(x, train) + x
    return PreNorm(ff, name='1', **kw)(x, train) + x


class Transformer(nn.Module):
  """The original's `Transformer` of depth `depth`: `layers.<i>` are TransformerLayers."""
  dim: int
  depth: int = 1
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  knn_attention: float = 0.7
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fields = ('dim', 'depth', 'heads', 'dim_head', 'mlp_dim', 'dropout', 'knn_attention', 'dtype', 'param_dtype')
    return _Layers(**{f: getattr(self, f) for f in fields}, name='layers')(x, train)


class _Layers(Transformer):
  """The `layers` ModuleList of a Transformer: children `0`, `1`, ... are TransformerLayers."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.depth):
      x = TransformerLayer(self.dim, self.heads, self.dim_head, self.mlp_dim, self.dropout, self.knn_attention,
                           self.dtype, self.param_dtype, name=str(i))(x, train)
    return x


class NormLinear(nn.Module):
  """Sequential(LayerNorm, Linear), children `0` and `1`: the original's LinearMap, mlp_head_* and classifier1/2."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.LayerNorm(LN_EPS, name='0', **kw)(x)
    return nn.Dense(self.features, kernel_init=torch_default_init, name='1', **kw)(x)
