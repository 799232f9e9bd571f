"""DTN: decoupled multi-scale temporal Transformers (small / media / large branches).

Tokens (B, T, dim) -> [RCM] -> three branches of low/media/high frames sampled
per temporal segment -> cls token + positional embedding -> N multi-scale
blocks (block 0 first does local temporal modelling) -> cls features ->
[heads / temp] -> element-wise max merge; plus the RCM distillation loss.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rgbd_jax.models.attention import NormLinear, Transformer
from rgbd_jax.models.layers import TemporalInception, temporal_max3
from rgbd_jax.models.rcm import RCM

BRANCHES = ('small', 'media', 'large')
# The original's TemporalInception(512, [160, 112, 224, 24, 64, 64]); its output (160+224+64+64) is dim.
TEMPORAL_WIDTHS = (160, 112, 224, 24, 64, 64)


def temporal_widths(dim: int) -> tuple[int, ...]:
  """The temporal inception widths scaled to `dim`, with outputs summing to exactly dim."""
  if dim == 512:
    return TEMPORAL_WIDTHS
  w = [max(1, round(c * dim / 512)) for c in TEMPORAL_WIDTHS]
  w[0] = dim - (w[2] + w[4] + w[5])
  if w[0] < 1:
    raise ValueError(f'model.dim={dim} is too small for the temporal inception block')
  return tuple(w)


def segments(n: int, sn: int) -> list[range]:
  """The original's temporal segments: segment i of sn over n tokens."""
  out = []
  for i in range(sn):
    start = int(n * i / sn)
    out.append(range(start, max(start + 1, int(n * (i + 1) / sn))))
  return out


def segment_centres(n: int, sn: int) -> np.ndarray:
  """Evaluation choice: int(mean(segment)) of each segment."""
  return np.array([int(np.mean(list(s))) for s in segments(n, sn)], np.int32)


def random_segment_choice(key: jax.Array, n: int, sn: int) -> jax.Array:
  """Training choice: one uniformly random element of each segment (one draw for the batch)."""
  segs = segments(n, sn)
  lo = np.array([s.start for s in segs], np.int32)
  hi = np.array([s.stop for s in segs], np.int32)
  return jax.random.randint(key, (sn,), lo, hi)



class MultiScaleBlock(nn.Module):
  """One multi-scale encoder block: [local modelling] + one Transformer per branch."""
  dim: int = 512
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  knn_attention: float = 0.7
  local: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs: list[jax.Array], train: bool) -> list[jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = []
    for name, x in zip(BRANCHES, xs):
      if self.local:
        # Local temporal modelling of the non-cls tokens, then the cls token back in front.
        y = TemporalInception(temporal_widths(self.dim), name=f'Mixed_{name}', **kw)(x[:, 1:], train)
        y = temporal_max3(y, axis=1)  # the original's 3x1x1 stride-1 zero-padded MaxPool
        x = jnp.concatenate([x[:, :1], y.astype(x.dtype)], axis=1)
      x = Transformer(self.dim, 1, self.heads, self.dim_head, self.mlp_dim, self.dropout, self.knn_attention,
                      name=f'transformer_enc_{name}', **kw)(x, train)
      out.append(x)
    return out


class _Blocks(nn.Module):
  """`multi_scale_transformers` ModuleList: children 0..N-1; block 0 has local modelling."""
  depth: int
  block: dict

  @nn.compact
  def __call__(self, xs, train: bool):
    for i in range(self.depth):
      xs = MultiScaleBlock(local=(i == 0), name=str(i), **self.block)(xs, train)
    return xs


class DTN(nn.Module):
  """The temporal network. `num_classes=None` builds it without heads (fusion streams)."""
  num_classes: Optional[int] = None
  frames: int = 64                       # T, the RCM's time axis (sample_duration)
  branch_frames: tuple[int, int, int] = (16, 32, 48)   # low/media/high_frames
  dim: int = 512
  depth: int = 6                         # N
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  knn_attention: float = 0.7
  recoupling: bool = True
  se_heads: int = 1
  rcm_hidden: int = 256
  rcm_dropout: float = 0.4
  temper: float = 0.5
  sharpness: bool = True
  train_sampling: str = 'random'         # 'random' (the original) or 'centre'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def check_frames(self, t: int) -> None:
    """Clear errors for a clip length the DTN cannot take."""
    if self.recoupling and t != self.frames:
      raise ValueError(f'the RCM was built for T={self.frames} frames, got T={t} '
                       '(model.sample_duration must equal the clip length)')
    for sn in self.branch_frames:
      if sn > t:
        raise ValueError(f'a DTN branch samples {sn} frames but the clip has only T={t} '
                         '(dataset.low_frames/media_frames/high_frames must be <= model.sample_duration)')

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool, temp: Any = 1.0) -> dict[str, jax.Array]:
    b, t, _ = tokens.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.check_frames(t)
    out = {}
    if self.recoupling:
      tokens, spatial_weights = RCM(self.dim, self.frames, self.se_heads, self.rcm_hidden,
                                    dropout=self.rcm_dropout, name='rcm', **kw)(tokens, train)
      out['rcm_out'] = tokens
      out['rcm_spatial_weights'] = spatial_weights
    xs = []
    for name, sn in zip(BRANCHES, self.branch_frames):
      if train and self.train_sampling == 'random':
        idx = random_segment_choice(self.make_rng('frames'), t, sn)
      elif train and self.train_sampling != 'centre':
        raise ValueError(f"train_sampling must be 'random' or 'centre', got {self.train_sampling!r}")
      else:
        idx = jnp.asarray(segment_centres(t, sn))
      x = jnp.take(tokens, idx, axis=1)
      normal = nn.initializers.normal(1.0)
      pos = self.param(f'pos_embedding_{name}', normal, (1, sn + 1, self.dim), self.param_dtype)
      cls = self.param(f'cls_token_{name}', normal, (1, 1, self.dim), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.dim)), x], axis=1)
      xs.append(x + pos.astype(x.dtype))  # embedding dropout is 0 in the original
    block = dict(dim=self.dim, heads=self.heads, dim_head=self.dim_head, mlp_dim=self.mlp_dim,
                 dropout=self.dropout, knn_attention=self.knn_attention, **kw)
    xs = _Blocks(self.depth, block, name='multi_scale_transformers')(xs, train)
    feats = [x[:, 0] for x in xs]
    for name, f in zip(BRANCHES, feats):
      out[f'feat_{name}'] = f
    if self.recoupling:
      out['distillation_loss'] = kl_distillation(spatial_weights, sum(feats) / 3.0, self.temper)
    else:
      out['distillation_loss'] = jnp.zeros((), jnp.float32)
    if self.num_classes is not None:
      logits = []
      for name, f in zip(BRANCHES, feats):
        z = NormLinear(self.num_classes, name=f'mlp_head_{name}', **kw)(f)
        logits.append(z / jnp.asarray(temp, z.dtype) if self.sharpness else z)
      feats = logits
      out['xs'], out['xm'], out['xl'] = logits
    out['merged'] = jnp.maximum(jnp.maximum(feats[0], feats[1]), feats[2])
    return out


def kl_distillation(spatial_weights: jax.Array, target_feats: jax.Array, temper: float) -> jax.Array:
  """F.kl_div(log_softmax(sw / T), softmax(stopgrad(target) / T), reduction='sum')."""
  dt = jnp.promote_types(spatial_weights.dtype, jnp.float32)
  log_q = jax.nn.log_softmax(spatial_weights.astype(dt) / temper, axis=-1)
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(target_feats).astype(dt) / temper, axis=-1)
  p = jnp.exp(log_p)
  return jnp.sum(p * (log_p - log_q))
