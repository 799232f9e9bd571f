"""DTNNetV2: the journal's multi-branch temporal network (lib/model/DTN_v2.py).

Three branches over the LinearMap tokens (B, T, dim). Branch j takes
(j + 1) * (T // intar_fatcer) tokens, one per temporal segment (so branch 2
draws 3T/intar tokens from T frames: segments shorter than a frame repeat
frames), runs a temporal inception block whose kernel is int(sqrt(tokens))
(even kernels included: TF-"SAME" padding, front (k-1)//2) and a 3-tap max
pool, prepends its cls token, adds its positional embedding and runs an
N-layer pre-norm Transformer with kNN attention. Its head (LayerNorm,
Dropout, Linear on the cls token) gives the branch logits, divided by the
sharpness temperature; the merged logits are their element-wise max.

Variable names follow the original's keys: `cls_tokens.<j>.{cls_token,
pos_embedding}`, `multi_scale_transformers.<j>.0` (temporal inception),
`.2.layers.<l>` (Transformer layer), `.3.0` / `.3.2` (head).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models.attention import LN_EPS, TransformerLayer
from rgbd_jax.models.dtn import random_segment_choice, segment_centres, temporal_widths
from rgbd_jax.models.layers import Unit3D, fused_units, torch_default_init
from rgbd_jax.models.ops.pool import max_pool_same

NUM_BRANCHES = 3


def branch_tokens(frames: int, intar_fatcer: int) -> tuple[int, ...]:
  """Tokens per branch: (j + 1) * (frames // intar_fatcer), as the original's constructor counts them."""
  if intar_fatcer < 1 or frames // intar_fatcer < 1:
    raise ValueError(f'model.intar_fatcer={intar_fatcer} leaves no token per branch at '
                     f'sample_duration={frames} (the first branch takes sample_duration // intar_fatcer)')
  step = frames // intar_fatcer
  return tuple((j + 1) * step for j in range(NUM_BRANCHES))


def inception_kernel(tokens: int) -> int:
  """The temporal inception kernel of a branch: int(sqrt(tokens)) (the original's `dynamic_kernel`)."""
  return math.isqrt(tokens)


class TemporalInception(nn.Module):
  """Temporal inception on tokens (B, n, C) with a kernel k x 1 x 1 (any k, even included).

  1x1 | 1x1 -> k | 1x1 -> k | k-tap max pool (zero padding) -> 1x1; children
  b0, b1a, b1b, b2a, b2b, b3b as the original's Unit3Ds.
  """
  widths: tuple[int, ...]   # [b0, b1a, b1b, b2a, b2b, b3b]
  kernel: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c, k = self.widths, self.kernel
    kt = () if k == 1 else (k,)
    unit = lambda f, kern, name: Unit3D(f, kern, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    b0, b1a, b2a = unit(c[0], (), 'b0'), unit(c[1], (), 'b1a'), unit(c[3], (), 'b2a')
    b1b, b2b, b3b = unit(c[2], kt, 'b1b'), unit(c[4], kt, 'b2b'), unit(c[5], (), 'b3b')
    y0, y1, y2 = fused_units([b0, b1a, b2a], x, train, self.dtype)
    y1 = b1b(y1, train)
    y2 = b2b(y2, train)
    y3 = b3b(max_pool_same(x.astype(self.dtype), (k,), (1,)), train)
    return jnp.concatenate([y0, y1, y2, y3], axis=-1)


class ClsToken(nn.Module):
  """Prepends the cls token and adds pos_embedding[:, :n + 1] (both drawn N(0, 1) at init)."""
  tokens: int
  dim: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, _ = x.shape
    normal = nn.initializers.normal(1.0)
    cls = self.param('cls_token', normal, (1, 1, self.dim), self.param_dtype)
    pos = self.param('pos_embedding', normal, (1, self.tokens + 1, self.dim), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.dim)), x], axis=1)
    return x + pos[:, :n + 1].astype(x.dtype)


class _ClsTokens(nn.Module):
  """`cls_tokens` ModuleList: `self(j, x)` runs child j."""
  tokens: tuple[int, ...]
  dim: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, j: int, x: jax.Array) -> jax.Array:
    return ClsToken(self.tokens[j], self.dim, self.param_dtype, name=str(j))(x)


class ClsTransformer(nn.Module):
  """The original's `Transformer`: N pre-norm layers, no final norm; also returns x[:, 0] after each layer."""
  dim: int
  depth: int = 6
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  knn_attention: float = 0.7
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    fields = ('dim', 'depth', 'heads', 'dim_head', 'mlp_dim', 'dropout', 'knn_attention', 'dtype', 'param_dtype')
    return _ClsLayers(**{f: getattr(self, f) for f in fields}, name='layers')(x, train)


class _ClsLayers(ClsTransformer):
  """The `layers` ModuleList of a ClsTransformer."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    cls = []
    for i in range(self.depth):
      x = TransformerLayer(self.dim, self.heads, self.dim_head, self.mlp_dim, self.dropout, self.knn_attention,
                           self.dtype, self.param_dtype, name=str(i))(x, train)
      cls.append(x[:, 0])
    return x, cls


class Head(nn.Module):
  """Sequential(LayerNorm, Dropout, Linear): children `0` and `2`."""
  features: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.LayerNorm(LN_EPS, name='0', **kw)(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.features, kernel_init=torch_default_init, name='2', **kw)(x)


class _Branch(nn.Module):
  """One entry of `multi_scale_transformers`: [TemporalInception, MaxPool, Transformer, head]."""
  kernel: int
  transformer: dict
  num_classes: Optional[int]
  head_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, add_cls: Callable[[jax.Array], jax.Array], train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    y = TemporalInception(temporal_widths(dim), self.kernel, name='0', **kw)(x, train)
    y = max_pool_same(y, (3,), (1,))  # child `1`: MaxPool3dSamePadding([3, 1, 1]), zero padded
    tcnn = y
    y, cls = ClsTransformer(dim, name='2', **self.transformer, **kw)(add_cls(y.astype(x.dtype)), train)
    logits = None
    if self.num_classes is not None:
      logits = Head(self.num_classes, self.head_dropout, name='3', **kw)(y[:, 0], train)
    return tcnn, cls, logits


class _Branches(nn.Module):
  """`multi_scale_transformers` ModuleList: one _Branch per token count."""
  kernels: tuple[int, ...]
  transformer: dict
  num_classes: Optional[int]
  head_dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], cls_tokens: _ClsTokens, train: bool):
    return [_Branch(k, self.transformer, self.num_classes, self.head_dropout, self.dtype, self.param_dtype,
                    name=str(j))(x, functools.partial(cls_tokens, j), train)
            for j, (k, x) in enumerate(zip(self.kernels, xs))]


class DTNNetV2(nn.Module):
  """The temporal network; `num_classes=None` builds it without heads."""
  num_classes: Optional[int] = 60
  frames: int = 16                 # sample_duration
  intar_fatcer: int = 2
  dim: int = 512
  depth: int = 6                   # N
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1             # the original's emb_dropout, inside every Transformer layer
  knn_attention: float = 0.7
  head_dropout: float = 0.0        # mlp_dropout
  train_sampling: str = 'random'   # 'random' (the original) or 'centre'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def tokens(self) -> tuple[int, ...]:
    return branch_tokens(self.frames, self.intar_fatcer)

  def _indices(self, t: int, n: int, train: bool) -> jax.Array:
    """utils.uniform_sampling(t, n, random=self.training): one frame per segment, the same for the batch."""
    if not train or self.train_sampling == 'centre':
      return jnp.asarray(segment_centres(t, n))
    if self.train_sampling != 'random':
      raise ValueError(f"model.frame_sampling must be 'random' or 'centre', got {self.train_sampling!r}")
    return random_segment_choice(self.make_rng('frames'), t, n)

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False, temp: Any = 1.0) -> dict[str, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    t = tokens.shape[1]
    sizes = self.tokens
    xs = [jnp.take(tokens, self._indices(t, n, train), axis=1) for n in sizes]
    cls_tokens = _ClsTokens(sizes, self.dim, self.param_dtype, name='cls_tokens')
    transformer = dict(depth=self.depth, heads=self.heads, dim_head=self.dim_head, mlp_dim=self.mlp_dim,
                       dropout=self.dropout, knn_attention=self.knn_attention)
    branches = _Branches(tuple(inception_kernel(n) for n in sizes), transformer, self.num_classes,
                         self.head_dropout, name='multi_scale_transformers', **kw)(xs, cls_tokens, train)
    out: dict[str, Any] = {}
    feats, logits = [], []
    for j, (tcnn, cls, z) in enumerate(branches):
      out[f'dtn_branch{j}_tcnn_out'] = jnp.swapaxes(tcnn, 1, 2)  # (B, dim, n_j), the original's layout
      for l, e in enumerate(cls):
        out[f'cls_embed_branch{j}_layer{l}'] = e
      feats.append(cls[-1])
      if z is not None:
        logits.append(z / jnp.asarray(temp, z.dtype))
    out['cls_embeds'] = [list(cls) for _, cls, _ in branches]
    out['temporal_features'] = sum(feats) / float(len(feats))
    if logits:
      out['xs'], out['xm'], out['xl'] = logits
      out['merged'] = functools.reduce(jnp.maximum, logits)
    return out
