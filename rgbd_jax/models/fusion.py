"""CrossFusionNet ('FusionNet'): RGB + depth streams with spatial/temporal interaction.

The 1x1 Conv2d layers of the original act on (B, C, 1, 1) or (B, C, T, 1)
tensors; here they are Dense layers on the channel axis (kernel (in, out)).
The spatial interaction reproduces the original's raw `.view` reshapes: its
input (B, T, 2*dim) is reinterpreted (not transposed) as (B, 2*dim, T), and its
output (B, dim, T) is reinterpreted as (B, T, dim).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models.attention import NormLinear
from rgbd_jax.models.layers import TorchBatchNorm, torch_default_init
from rgbd_jax.models.recognizer import DSNNet, check_clip


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """F.normalize(x, p=2, dim=-1)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _dense(features, name, dtype, param_dtype, bias=False):
  return nn.Dense(features, use_bias=bias, kernel_init=torch_default_init, dtype=dtype,
                  param_dtype=param_dtype, name=name)


class ConvBNStack(nn.Module):
  """A Sequential of 1x1 convs (no bias), each but optionally the last followed by BatchNorm2d + ReLU.

  `widths` are the conv outputs; children are numbered as the original's
  Sequential: conv i*3, BN i*3+1 (ReLU i*3+2 has no variables).
  """
  widths: tuple[int, ...]
  last_plain: bool = True     # the last conv has no BN/ReLU after it
  dropout: float = 0.0        # a trailing Dropout (crossFusion / crossFusionT)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n = len(self.widths)
    for i, f in enumerate(self.widths):
      x = _dense(f, str(3 * i), self.dtype, self.param_dtype)(x)
      if not (self.last_plain and i == n - 1):
        x = TorchBatchNorm(f, param_dtype=self.param_dtype, name=str(3 * i + 1))(x, train)
        x = nn.relu(x)
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class _Named(nn.Module):
  """A level of the tree with one child stack (`encoder.enconv`, `decoder.deconv`)."""
  child: str
  widths: tuple[int, ...]
  last_plain: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    return ConvBNStack(self.widths, self.last_plain, dtype=self.dtype, param_dtype=self.param_dtype,
                       name=self.child)(x, train)


class FusionModule(nn.Module):
  """Encoder 2dim->2dim->dim->dim/2->256 (`en`), decoder 256->256->dim (`de`), efc 256->classes."""
  num_classes: int
  dim: int = 512
  code: int = 256
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c_in = 2 * self.dim
    en = _Named('enconv', (c_in, c_in // 2, c_in // 4, self.code), True, name='encoder', **kw)(x, train)
    de = _Named('deconv', (c_in // 4, c_in // 2), False, name='decoder', **kw)(en, train)
    logits = _dense(self.num_classes, 'efc', **kw)(en)
    return logits, en, de



class CrossFusionNet(nn.Module):
  """Two unimodal streams without heads (`Modalit_rgb`, `Modalit_depth`) and their fusion."""
  num_classes: int
  stream: DSNNet = None           # an unbound headless DSNNet; cloned for each modality
  fusion_dropout: float = 0.4     # after crossFusion / crossFusionT
  bce_dropout: float = 0.5        # before the modality discriminator `fc`
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = self.stream.dtn.dim
    # Fresh copies of the template (and of its DTN), so each stream owns its variables.
    fresh = lambda: self.stream.clone(parent=None, name=None, dtn=self.stream.dtn.clone(parent=None, name=None))
    self.Modalit_rgb = fresh()
    self.Modalit_depth = fresh()
    self.crossFusion = ConvBNStack((dim, dim), dropout=self.fusion_dropout, **kw)
    self.crossFusionT = ConvBNStack((dim, dim), dropout=self.fusion_dropout, **kw)
    self.classifier1 = NormLinear(self.num_classes, **kw)
    self.classifier2 = NormLinear(self.num_classes, **kw)
    self.fusion_model = FusionModule(self.num_classes, dim, **kw)
    self.fc = _dense(1, None, **kw)
    self.bce_drop = nn.Dropout(self.bce_dropout)

  def __call__(self, rgb, rgb_heatmap, depth, depth_heatmap, train: bool = False,
               temp: Any = 1.0) -> dict[str, jax.Array]:
    check_clip(rgb, rgb_heatmap, 'rgb')
    check_clip(depth, depth_heatmap, 'depth')
    if rgb.shape != depth.shape:
      raise ValueError(f'rgb {rgb.shape} and depth {depth.shape} clips must have the same shape')
    s_m, means_m = self.Modalit_rgb.spatial(rgb, rgb_heatmap, train)
    s_k, means_k = self.Modalit_depth.spatial(depth, depth_heatmap, train)
    b, t, c = s_m.shape
    # Spatial interaction with the original's raw reshapes (B, T, 2C) -> (B, 2C, T) -> 1x1 convs.
    z = l2_normalize(jnp.concatenate([s_m, s_k], axis=-1)).reshape(b, 2 * c, t)
    z = self.crossFusion(jnp.swapaxes(z, 1, 2), train)        # channels-last (B, T, C)
    spatial_fusion = jnp.swapaxes(z, 1, 2).reshape(b, t, c)   # torch (B, C, T) viewed as (B, T, C)
    out_m = self.Modalit_rgb.temporal(s_m + spatial_fusion, train, temp)
    out_k = self.Modalit_depth.temporal(s_k + spatial_fusion, train, temp)
    f_m, f_k = out_m['merged'], out_k['merged']
    logit_r = self.classifier1(f_m)
    logit_d = self.classifier2(f_k)
    # Temporal interaction on the clip features.
    u = self.crossFusionT(l2_normalize(jnp.concatenate([f_m, f_k], axis=-1)), train)
    f_m, f_k = f_m + u, f_k + u
    fusion_logits, en, de = self.fusion_model(jnp.concatenate([f_m, f_k], axis=-1), train)
    bce_r = self.fc(self.bce_drop(f_m, deterministic=not train))[:, 0]
    bce_d = self.fc(self.bce_drop(f_k, deterministic=not train))[:, 0]
    out = {
        'fusion_logits': fusion_logits, 'logits_rgb': logit_r, 'logits_depth': logit_d,
        'distillation_loss': out_m['distillation_loss'] + out_k['distillation_loss'],
        'F_M': f_m, 'F_K': f_k, 'en': en, 'de': de, 'bce_logit_rgb': bce_r, 'bce_logit_depth': bce_d,
        'spatial_features_rgb': s_m, 'spatial_features_depth': s_k, 'spatial_fusion': spatial_fusion,
        'temporal_fusion': u,
    }
    for suffix, o, means in (('rgb', out_m, means_m), ('depth', out_k, means_k)):
      for k, v in o.items():
        if k not in ('merged', 'distillation_loss'):
          out[f'{k}_{suffix}'] = v
      out[f'distillation_loss_{suffix}'] = o['distillation_loss']
      for k, v in means.items():
        out[f'{k}_{suffix}'] = v
    return out
