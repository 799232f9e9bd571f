"""The journal's RGB-D fusion as `train_fusion.py` runs it (lib/model/fusion_Net.py).

Two frozen DSNNetV2 streams (the original's `FeatureCapter`: `Modalit_rgb`,
`Modalit_depth`, in evaluation mode, no gradient in training, each at the
sharpness temperature of its own checkpoint's epoch) give each modality's
logits, spatial tokens (the LinearMap output, B x T x dim) and temporal
feature (the mean of the three branches' final cls tokens). The trained
part, the original's `CrossFusionNet`, is this module's own variables:

* SCC (`SCC_Module`): LayerNorm over both modalities' concatenated tokens,
  then `scc_depth` blocks of EnhanceModule (sigmoid gates from the joint
  features) and two cross attentions (rgb queries depth keys and back);
* the enhanced temporal features (`temp_enhance_module`) become token 0
  before each modality's SCC tokens -> LayerNorm (norm1/norm2) -> + its
  positional embedding (T + 1 positions: T = sample_duration);
* TCC (`TimesFormer`): `tcc_depth` blocks of two cross attentions;
* classifier1 / classifier2 on token 0: `fusion_logits_rgb`, `fusion_logits_depth`.

A cross attention (`AttentionNet`) takes q from its first argument, k from
the other modality and v from the first again, keeps the top 70% scores of
each row (kNN), has no output projection, and adds LayerNorm(attention) and
then a pre-norm feed-forward block residually.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models.attention import LN_EPS, FeedForward, PreNorm, knn_keep, knn_mask
from rgbd_jax.models.layers import torch_default_init
from rgbd_jax.models.umdr.dsn_v2 import DSNNetV2, check_video

FUSION_TOPK = 0.7  # AttentionNet's default top-k fraction; train_fusion.py never sets it


def _dense(features: int, name: str, kw: dict, bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=bias, kernel_init=torch_default_init, name=name, **kw)


class _Gate(nn.Module):
  """Sequential(Linear(2d, d), ReLU, Linear(d, d), Sigmoid): children 0 and 2."""
  dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    return jax.nn.sigmoid(_dense(self.dim, '2', kw)(nn.relu(_dense(self.dim, '0', kw)(x))))


class EnhanceModule(nn.Module):
  """Each modality scaled by a sigmoid gate computed from LayerNorm(concat(rgb, depth))."""
  dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xr: jax.Array, xd: jax.Array) -> tuple[jax.Array, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    joint = nn.LayerNorm(LN_EPS, name='norm', **kw)(jnp.concatenate([xr, xd], axis=-1))
    return xr * _Gate(self.dim, name='mlp_rgb', **kw)(joint), xd * _Gate(self.dim, name='mlp_depth', **kw)(joint)


class AttentionNet(nn.Module):
  """Cross attention: q and v from `x`, k from `other`; kNN top-k; no output projection."""
  dim: int
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1
  topk: float = FUSION_TOPK
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, other: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, n, _ = x.shape
    inner = self.heads * self.dim_head
    if inner != self.dim:
      raise ValueError(f'the fusion cross attention adds its {inner}-wide output (heads * dim_head) to '
                       f'{self.dim}-wide tokens: they must match')
    split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head)
    q = split(_dense(inner, 'q', kw, bias=False)(x))
    k = split(_dense(inner, 'k', kw, bias=False)(other))
    v = split(_dense(inner, 'v', kw, bias=False)(x))
    dots = jnp.einsum('bihd,bjhd->bhij', q, k) * (self.dim_head ** -0.5)
    if self.topk:
      keep = knn_keep(dots.shape[-1], self.topk)
      if keep < 1:
        raise ValueError(f'the fusion kNN attention keeps no token of {dots.shape[-1]}')
      dots = jnp.where(knn_mask(dots, keep), dots, -jnp.inf)
    attn = jax.nn.softmax(dots.astype(jnp.promote_types(dots.dtype, jnp.float32)), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, n, inner)
    out = nn.LayerNorm(LN_EPS, name='norm', **kw)(out) + x
    ff = FeedForward(self.dim, self.mlp_dim, self.dropout, parent=None, **kw)
    return PreNorm(ff, name='ffn', **kw)(out, train) + out


class _CrossBlock(nn.Module):
  """One entry of `att_nets`: [EnhanceModule,] AttentionNet (rgb), AttentionNet (depth)."""
  enhance: bool
  attention: dict
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xr, xd, train):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = xr.shape[-1]
    first = 0
    if self.enhance:
      xr, xd = EnhanceModule(dim, name='0', **kw)(xr, xd)
      first = 1
    # both from the pair as it is before this block's attention
    cm = AttentionNet(dim, name=str(first), **self.attention, **kw)(xr, xd, train)
    ck = AttentionNet(dim, name=str(first + 1), **self.attention, **kw)(xd, xr, train)
    return cm, ck


class _AttNets(nn.Module):
  depth: int
  enhance: bool
  attention: dict
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xr, xd, train):
    for i in range(self.depth):
      xr, xd = _CrossBlock(self.enhance, self.attention, self.dtype, self.param_dtype, name=str(i))(xr, xd, train)
    return xr, xd


class Complement(nn.Module):
  """ComplementSpatial (`enhance`: SCC) / ComplementTemporal (TCC): LayerNorm(2d) on the pair, then the blocks."""
  depth: int
  enhance: bool
  attention: dict
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xr: jax.Array, xd: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = xr.shape[-1]
    joint = nn.LayerNorm(LN_EPS, name='norm', **kw)(jnp.concatenate([xr, xd], axis=-1))
    return _AttNets(self.depth, self.enhance, self.attention, name='att_nets', **kw)(
        joint[..., :c], joint[..., c:], train)


class UMDRFusion(nn.Module):
  """Two frozen DSNNetV2 streams and the trained cross-modal fusion (model.Network 'UMDRFusion')."""
  num_classes: int
  stream: DSNNetV2 = None          # an unbound DSNNetV2 (with heads); cloned for each modality
  scc_depth: int = 2
  tcc_depth: int = 4
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 768
  dropout: float = 0.1             # in the cross attentions' feed-forward blocks
  # (rgb, depth) sharpness temperatures: FeatureCapter sets args.epoch to each stream checkpoint's
  # epoch - 1 before running that stream, so the two may differ (build.stream_epochs)
  stream_temps: tuple[float, float] = (0.07, 0.07)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim, frames = self.stream.dtn.dim, self.stream.frames
    fresh = lambda: self.stream.clone(parent=None, name=None, dtn=self.stream.dtn.clone(parent=None, name=None))
    self.Modalit_rgb = fresh()
    self.Modalit_depth = fresh()
    attention = dict(heads=self.heads, dim_head=self.dim_head, mlp_dim=self.mlp_dim, dropout=self.dropout)
    self.SCC_Module = Complement(self.scc_depth, True, attention, **kw)
    self.temp_enhance_module = EnhanceModule(dim, **kw)
    self.TimesFormer = Complement(self.tcc_depth, False, attention, **kw)
    normal = nn.initializers.normal(1.0)
    self.pos_embedding_M = self.param('pos_embedding_M', normal, (1, frames + 1, dim), self.param_dtype)
    self.pos_embedding_K = self.param('pos_embedding_K', normal, (1, frames + 1, dim), self.param_dtype)
    self.classifier1 = _dense(self.num_classes, None, kw)
    self.classifier2 = _dense(self.num_classes, None, kw)
    self.norm1 = nn.LayerNorm(LN_EPS, **kw)
    self.norm2 = nn.LayerNorm(LN_EPS, **kw)

  def __call__(self, rgb: jax.Array, depth: jax.Array, train: bool = False, temp: Any = None
               ) -> dict[str, jax.Array]:
    del temp  # the streams keep their checkpoints' temperatures (stream_temps); the fusion has none
    check_video(rgb, self.stream.frames, 'rgb')
    check_video(depth, self.stream.frames, 'depth')
    if rgb.shape != depth.shape:
      raise ValueError(f'rgb {rgb.shape} and depth {depth.shape} clips must have the same shape')
    out: dict[str, jax.Array] = {}
    feats = {}
    streams = (('rgb', self.Modalit_rgb, rgb, self.stream_temps[0]),
               ('depth', self.Modalit_depth, depth, self.stream_temps[1]))
    for m, net, x, stream_temp in streams:
      # FeatureCapter: frozen streams in evaluation mode, under no_grad while training. In evaluation
      # mode the gradient may pass (nothing trains then; Grad-CAM reads the streams' feature maps).
      o = net(x, train=False, temp=stream_temp)
      if train:
        o = jax.lax.stop_gradient(o)
      for k in ('logits', 'xs', 'xm', 'xl'):
        out[f'{k}_{m}'] = o[k]
      out[f'spatial_{m}'], out[f'temporal_{m}'] = o['spatial_features'], o['temporal_features']
      for k, v in o.items():
        if k not in ('logits', 'xs', 'xm', 'xl', 'spatial_features', 'temporal_features', 'distillation_loss'):
          out[f'{m}/{k}'] = v
      feats[m] = (o['spatial_features'], o['temporal_features'])
    scc_m, scc_k = self.SCC_Module(feats['rgb'][0], feats['depth'][0], train)
    tem_m, tem_k = self.temp_enhance_module(feats['rgb'][1], feats['depth'][1])
    out['fusion/scc_rgb'], out['fusion/scc_depth'] = scc_m, scc_k
    out['fusion/temporal_enhanced_rgb'], out['fusion/temporal_enhanced_depth'] = tem_m, tem_k
    seq_m = self.norm1(jnp.concatenate([tem_m[:, None], scc_m], axis=1)) + self.pos_embedding_M.astype(scc_m.dtype)
    seq_k = self.norm2(jnp.concatenate([tem_k[:, None], scc_k], axis=1)) + self.pos_embedding_K.astype(scc_k.dtype)
    tcc_m, tcc_k = self.TimesFormer(seq_m, seq_k, train)
    out['fusion/tcc_rgb'], out['fusion/tcc_depth'] = tcc_m, tcc_k
    out['fusion_logits_rgb'] = self.classifier1(tcc_m[:, 0])
    out['fusion_logits_depth'] = self.classifier2(tcc_k[:, 0])
    out['fusion_cls_features'] = jnp.stack([tcc_m[:, 0], tcc_k[:, 0]], axis=-1)
    out['combined_rgbd'] = (out['logits_rgb'] + out['logits_depth']) / 2.0
    out['combined'] = (out['logits_rgb'] + out['logits_depth'] + out['fusion_logits_rgb']
                       + out['fusion_logits_depth']) / 4.0
    return out
