"""DSNNetV2: the journal's unimodal network (lib/model/DSN_v2.py).

video (B, T, H, W, 3) -> stem (7x7/2 conv, pool, 1x1, 3x3, pool; per frame) ->
three SMS stages, each two spatial inception blocks and a closing max pool
(3x3/2, 2x2/2, 1x1), the third followed by channel pooling (a max over
adjacent channel pairs, 1024 -> 512), each followed by its RCM -> per-frame
spatial means -> LinearMap (LayerNorm, Linear) -> frames dropout -> DTNNetV2.
The network takes the video only (no FRP heatmap).

The journal's RCM recouples per stage: attention among channels with one
head per frame (q, k: Linear T -> 16T of each channel's time profile,
softmax over channels; head t mixes frame t's spatial maps), then temporal
weights sigmoid(TM_project(per-frame means)) scale the result and the input
is added back. `linear(TM_project output)` (B, 512) is the stage's student
in the distillation loss, whose teachers are the cls tokens of the last
Transformer layers (`rcm_distillation`).

Outputs keep the batch axis for any B (the original drops it at B = 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models.attention import LN_EPS
from rgbd_jax.models.i3d import scaled
from rgbd_jax.models.layers import SpatialInception, Unit3D, torch_default_init
from rgbd_jax.models.ops.pool import max_pool_same
from rgbd_jax.models.umdr.dtn_v2 import DTNNetV2

# The stem's Unit3Ds: (child index, features, kernel, stride); pools 3x3/2 at children 1 and 4.
STEM = ((0, 64, (7, 7), 2), (2, 64, (), 1), (3, 192, (3, 3), 1))
# SMS stages: Mixed1 widths, Mixed2 widths, closing max pool (window, stride).
SMS_BLOCKS = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), (3, 2)),
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (2, 2)),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128), (1, 1)),
)
CHANNEL_POOL_AFTER = 2   # the stage whose output is channel-pooled before its RCM
RCM_DIM_HEAD = 16


def sms_widths(width: float, depth: int) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]]:
  """The SMS stages' (scaled) widths."""
  if not 1 <= depth <= len(SMS_BLOCKS):
    raise ValueError(f'model.sms_depth must be 1..{len(SMS_BLOCKS)} (the original: 3), got {depth}')
  return [(tuple(scaled(c, width) for c in m1), tuple(scaled(c, width) for c in m2), pool)
          for m1, m2, pool in SMS_BLOCKS[:depth]]


def sms_out_features(width: float, depth: int) -> int:
  """Channels reaching the LinearMap: the last stage's output, halved by the channel pooling."""
  w = sms_widths(width, depth)[-1][1]
  c = w[0] + w[2] + w[4] + w[5]  # an inception block's output: b0 + b1b + b2b + b3b
  return c // 2 if depth > CHANNEL_POOL_AFTER else c


def mean_hw(x: jax.Array) -> jax.Array:
  """(B, T, H, W, C) -> mean over H, W as the original's (B, C, T)."""
  return jnp.swapaxes(jnp.mean(x, axis=(2, 3)), 1, 2)


def mean_ct(x: jax.Array) -> jax.Array:
  """(B, T, H, W, C) -> mean over C and T: (B, H, W)."""
  return jnp.mean(x, axis=(1, 4))


def channel_pool(x: jax.Array) -> jax.Array:
  """Channel_Pooling: max over channel pairs (2i, 2i + 1) (floor mode), torch's first-maximum gradient."""
  c = x.shape[-1] // 2 * 2
  y = max_pool_same(x[..., :c, None], (2,), (2,))
  return y[..., 0]


class _TMProject(nn.Module):
  """`TM_project` = Linear(T, 2T, no bias), GELU, Linear(2T, T, no bias), LayerNorm(T): children 0, 2, 3."""
  frames: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    v = nn.Dense(2 * self.frames, use_bias=False, kernel_init=torch_default_init, name='0', **kw)(v)
    v = nn.gelu(v, approximate=False)
    v = nn.Dense(self.frames, use_bias=False, kernel_init=torch_default_init, name='2', **kw)(v)
    return nn.LayerNorm(LN_EPS, name='3', **kw)(v)


class RCMModule(nn.Module):
  """The journal's per-stage RCM on (B, T, H, W, C).

  Returns (out, projection (B, proj_dim), temporal_project (B, T) before the sigmoid).
  """
  frames: int                      # sample_duration: the number of heads and the Linear layers' width
  proj_dim: int = 512
  dim_head: int = RCM_DIM_HEAD
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    del train  # nothing in the RCM depends on the mode
    b, t, h, w, c = x.shape
    if t != self.frames:
      raise ValueError(f'the RCM was built for T={self.frames} frames (model.sample_duration), got T={t}')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    profile = jnp.swapaxes(jnp.mean(x, axis=(2, 3)), 1, 2)                 # (B, C, T)
    dense = lambda name: nn.Dense(self.dim_head * t, use_bias=False, kernel_init=torch_default_init,
                                  name=name, **kw)
    q = dense('q')(profile).reshape(b, c, t, self.dim_head)               # '(h d)': head = frame
    k = dense('k')(profile).reshape(b, c, t, self.dim_head)
    dots = jnp.einsum('bihd,bjhd->bhij', q, k) * (self.dim_head ** -0.5)  # (B, T, C, C)
    attn = jax.nn.softmax(dots.astype(jnp.promote_types(dots.dtype, jnp.float32)), axis=-1).astype(x.dtype)
    out = jnp.einsum('btij,bthwj->bthwi', attn, x)                        # head t mixes frame t's maps
    temporal_project = _TMProject(t, name='TM_project', **kw)(jnp.mean(out, axis=(2, 3, 4)))
    weight = jax.nn.sigmoid(temporal_project)
    out = out * weight[:, :, None, None, None] + x
    projection = nn.Dense(self.proj_dim, kernel_init=torch_default_init, name='linear', **kw)(temporal_project)
    return out, projection, temporal_project


class SMSBlock(nn.Module):
  """Two spatial inception blocks (`Mixed1`, `Mixed2`) and a per-frame max pool (zero padded, TF-SAME)."""
  mixed1: tuple[int, ...]
  mixed2: tuple[int, ...]
  pool: tuple[int, int] = (1, 1)   # (window, stride) over H and W
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = SpatialInception(self.mixed1, name='Mixed1', **kw)(x, train)
    x = SpatialInception(self.mixed2, name='Mixed2', **kw)(x, train)
    window, stride = self.pool
    if window > 1 or stride > 1:
      b, t = x.shape[:2]
      y = max_pool_same(x.reshape(b * t, *x.shape[2:]), (window, window), (stride, stride))
      x = y.reshape(b, t, *y.shape[1:])
    return x


class _Stem(nn.Module):
  """`stem` Sequential on frames (N, H, W, 3): Unit3Ds at children 0, 2, 3, max pools 3x3/2 at 1 and 4."""
  width: float = 1.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    unit = nn.remat(Unit3D, static_argnums=(2,)) if self.remat else Unit3D
    for i, features, kernel, stride in STEM:
      x = unit(scaled(features, self.width), kernel, stride, dtype=self.dtype, param_dtype=self.param_dtype,
               name=str(i))(x, train)
      if i in (0, 3):
        x = max_pool_same(x, (3, 3), (2, 2))
    return x


class _SMSLayers(nn.Module):
  """`SMS_layers` ModuleList: [SMSBlock, RCM] per stage, Channel_Pooling before the third RCM."""
  frames: int
  proj_dim: int
  width: float = 1.0
  depth: int = 3
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    block = nn.remat(SMSBlock, static_argnums=(2,)) if self.remat else SMSBlock
    out, child = {}, 0
    for i, (m1, m2, pool) in enumerate(sms_widths(self.width, self.depth)):
      x = block(m1, m2, pool, name=str(child), **kw)(x, train)
      out[f'sms{i}_out_mean_hw'], out[f'sms{i}_out_mean_ct'] = mean_hw(x), mean_ct(x)
      child += 1
      if i == CHANNEL_POOL_AFTER:
        x = channel_pool(x)
        out['chanpool_out_mean_hw'], out['chanpool_out_mean_ct'] = mean_hw(x), mean_ct(x)
        child += 1  # Channel_Pooling has no variables
      x, projection, temporal_project = RCMModule(self.frames, self.proj_dim, name=str(child), **kw)(x, train)
      child += 1
      out[f'rcm{i}_out_mean_hw'], out[f'rcm{i}_out_mean_ct'] = mean_hw(x), mean_ct(x)
      out[f'rcm{i}_temporal_project'] = temporal_project
      out[f'rcm_projection_{i}'] = projection
    return x, out


class _LinearMap(nn.Module):
  """`LinearMap` = Sequential(Dropout, LayerNorm, Linear): children 1 and 2."""
  dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.LayerNorm(LN_EPS, name='1', **kw)(x)
    return nn.Dense(self.dim, kernel_init=torch_default_init, name='2', **kw)(x)


def rcm_distillation(projections: Sequence[jax.Array], cls_embeds: Sequence[Sequence[jax.Array]],
                     temper: float) -> jax.Array:
  """utils.RCM_loss: mean over stages i of CE(softmax(teacher_i / T), log_softmax(projection_i / T)).

  teacher_i is the sum over branches of the cls token after Transformer layer
  N - S + i (S stages: the last S layers teach, in order). The teacher is not
  detached, as in the original: its gradient reaches the Transformers.
  """
  s = len(projections)
  depth = len(cls_embeds[0])
  if depth < s:
    raise ValueError(f'the distillation pairs the {s} RCM stages with the last {s} Transformer layers: '
                     f'model.N must be >= model.sms_depth, got N={depth}')
  total = 0.0
  for i, p in enumerate(projections):
    dt = jnp.promote_types(p.dtype, jnp.float32)
    teacher = sum(embeds[depth - s + i].astype(dt) for embeds in cls_embeds)
    target = jax.nn.softmax(teacher / temper, axis=-1)
    total = total + jnp.mean(jnp.sum(-target * jax.nn.log_softmax(p.astype(dt) / temper, axis=-1), axis=-1))
  return total / s


def check_video(video: jax.Array, frames: int, name: str = 'video') -> None:
  """Clear errors for inputs the network cannot take."""
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f'{name} must be (B, T, H, W, 3), got shape {video.shape}')
  if video.shape[1] != frames:
    raise ValueError(f'{name} has T={video.shape[1]} frames; this network was built for '
                     f'model.sample_duration={frames} (the RCMs act on the time axis)')


class DSNNetV2(nn.Module):
  """The journal's unimodal network (model.Network 'DSNV2'). `dtn` is its configured (unbound) DTNNetV2."""
  frames: int = 16                 # sample_duration
  width: float = 1.0               # multiplier on the stem and SMS widths (the original: 1)
  sms_depth: int = 3
  temper: float = 0.6              # distillation temperature
  spatial_dropout: float = 0.0     # LinearMap's Dropout (dropout_spatial_prob)
  frames_dropout: float = 0.0      # frames_droupout: drops whole frames of the LinearMap output
  dtn: DTNNetV2 = None
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False, temp: Any = 1.0) -> dict[str, jax.Array]:
    check_video(video, self.frames)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, t = video.shape[:2]
    x = _Stem(self.width, self.remat, name='stem', **kw)(video.astype(self.dtype).reshape(b * t, *video.shape[2:]),
                                                         train)
    x = x.reshape(b, t, *x.shape[1:])
    out = {'stem_out_mean_hw': mean_hw(x), 'stem_out_mean_ct': mean_ct(x)}
    x, stages = _SMSLayers(self.frames, self.dtn.dim, self.width, self.sms_depth, self.remat,
                           name='SMS_layers', **kw)(x, train)
    out.update(stages)
    tokens = _LinearMap(self.dtn.dim, self.spatial_dropout, name='LinearMap', **kw)(jnp.mean(x, axis=(2, 3)), train)
    out['linearmap_out'] = tokens
    # Dropout2d on (B, T, dim) read as (N, C, L): whole frames are dropped.
    tokens = nn.Dropout(self.frames_dropout, broadcast_dims=(2,), deterministic=not train)(tokens)
    out['spatial_features'] = tokens
    temporal = dict(self.dtn(tokens, train, temp))
    cls_embeds = temporal.pop('cls_embeds')
    out.update(temporal)
    if 'merged' in out:
      out['logits'] = out.pop('merged')
    out['distillation_loss'] = rcm_distillation([out[f'rcm_projection_{i}'] for i in range(self.sms_depth)],
                                                cls_embeds, self.temper)
    return out
