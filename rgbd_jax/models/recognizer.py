"""The unimodal network (the original's DSNNet, config name 'I3DWTrans').

Spatial stem (+FRP) per frame -> spatial average -> LinearMap -> DTN.
`spatial` and `temporal` are separate methods because the fusion network
mixes the two modalities' spatial features before each DTN.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rgbd_jax.models import i3d
from rgbd_jax.models.attention import NormLinear
from rgbd_jax.models.dtn import DTN
from rgbd_jax.models.frp import FRP
from rgbd_jax.models.layers import SpatialInception, Unit3D



def check_clip(video: jax.Array, heatmap: Optional[jax.Array], name: str = 'video') -> None:
  """Clear errors for inputs the network cannot take."""
  if video.ndim != 5:
    raise ValueError(f'{name} must be (B, T, H, W, 3), got shape {video.shape}')
  b, t, h, w, c = video.shape
  if c != 3:
    raise ValueError(f'{name} must have 3 channels (B, T, H, W, 3), got shape {video.shape}')
  if h % 32 or w % 32:
    raise ValueError(f'{name} height and width must be multiples of 32 (the stem downsamples by 32 '
                     f'and FRP pools the heatmap by 2s), got {h}x{w}')
  if heatmap is not None and heatmap.shape != (b, t, h, w, 1):
    raise ValueError(f'the heatmap of {name} must be (B, T, H, W, 1) = {(b, t, h, w, 1)}, '
                     f'got {heatmap.shape}')


class DSNNet(nn.Module):
  """I3DWTrans. With `num_classes=None` the DTN has no heads (a fusion stream)."""
  num_classes: Optional[int] = 60
  width: float = 1.0
  frp: bool = True
  w: int = 10
  dtn: DTN = None  # the DTN's configuration (an unbound DTN module), built by build.py
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False  # recompute each stem endpoint's activations in the backward pass

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    widths = i3d.stem_widths(self.width)
    # nn.remat keeps the variable names: checkpoints do not depend on it
    unit = nn.remat(Unit3D, static_argnums=(2,)) if self.remat else Unit3D
    mixed = nn.remat(SpatialInception, static_argnums=(2,)) if self.remat else SpatialInception
    for name, kind, _ in i3d.ENDPOINTS:
      if kind == 'unit':
        features, kernel, stride = widths[name]
        module = unit(features, kernel, stride, **kw)
      elif kind == 'mixed':
        module = mixed(widths[name], **kw)
      else:
        continue
      setattr(self, name, module)  # registered under the endpoint's name, as the torch key
    self.LinearMap = NormLinear(self.dtn.dim, **kw)
    if self.frp:
      self.frp_module = FRP(self.w, self.param_dtype)

  def spatial(self, video: jax.Array, heatmap: Optional[jax.Array], train: bool = False):
    """Per-frame tokens (B, T, dim) and the stem's channel means."""
    needs_heat = self.frp and self.w >= 1
    check_clip(video, heatmap if needs_heat else None)
    self.dtn.check_frames(video.shape[1])  # before the stem runs, for a quick clear error
    if needs_heat and heatmap is None:
      raise ValueError('this network has FRP (model.frp) and needs the heatmap')
    modules = {name: getattr(self, name) for name, kind, _ in i3d.ENDPOINTS if kind != 'pool'}
    frp = self.frp_module if self.frp else None
    feats, means = i3d.run_stem(modules, frp, video.astype(self.dtype),
                                heatmap if needs_heat else None, train)
    tokens = self.LinearMap(jnp.mean(feats, axis=(2, 3)))
    return tokens, means

  def temporal(self, tokens: jax.Array, train: bool = False, temp: Any = 1.0):
    return self.dtn(tokens, train, temp)

  def __call__(self, video: jax.Array, heatmap: Optional[jax.Array] = None, train: bool = False,
               temp: Any = 1.0) -> dict[str, jax.Array]:
    tokens, means = self.spatial(video, heatmap, train)
    out = dict(self.temporal(tokens, train, temp))
    out['logits'] = out.pop('merged')
    out['spatial_features'] = tokens
    out.update(means)
    return out
