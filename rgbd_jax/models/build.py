"""Config -> network, and the sharpness temperature schedule.

The only place that reads the config for the models: modules get plain fields.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from rgbd_jax import configs
from rgbd_jax.models.dtn import DTN
from rgbd_jax.models.fusion import CrossFusionNet
from rgbd_jax.models.recognizer import DSNNet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}
WARMUP_TEMP_EPOCHS = 30  # the original's DTN default


def _dtypes(config):
  name = config.model.dtype
  if name not in DTYPES:
    raise ValueError(f'model.dtype must be one of {sorted(DTYPES)}, got {name!r}')
  dtype = DTYPES[name]
  return dtype, (jnp.float64 if name == 'float64' else jnp.float32)


def _dsn(config: ml_collections.ConfigDict, num_classes):
  m, d = config.model, config.dataset
  dtype, param_dtype = _dtypes(config)
  dtn = DTN(
      num_classes=num_classes,
      frames=int(m.sample_duration),
      branch_frames=(int(d.low_frames), int(d.media_frames), int(d.high_frames)),
      dim=int(m.dim), depth=int(m.N), heads=int(m.heads), dim_head=int(m.dim_head),
      mlp_dim=int(m.mlp_dim), dropout=float(m.dropout), knn_attention=float(m.knn_attention),
      recoupling=bool(m.recoupling), se_heads=int(m.SEHeads), rcm_hidden=configs.rcm_hidden(config),
      rcm_dropout=float(m.rcm_dropout), temper=float(m.temper), sharpness=bool(m.sharpness),
      train_sampling=str(m.frame_sampling), dtype=dtype, param_dtype=param_dtype, parent=None)
  return DSNNet(num_classes=num_classes, width=float(m.width), frp=bool(m.frp), w=int(m.w), dtn=dtn,
                dtype=dtype, param_dtype=param_dtype, parent=None)


def build_model(config: ml_collections.ConfigDict):
  """DSNNet for model.Network 'I3DWTrans', CrossFusionNet for 'FusionNet'."""
  network = config.model.Network
  classes = configs.num_classes(config)
  if network == 'I3DWTrans':
    return _dsn(config, classes)
  if network == 'FusionNet':
    dtype, param_dtype = _dtypes(config)
    return CrossFusionNet(num_classes=classes, stream=_dsn(config, None),
                          fusion_dropout=float(config.model.fusion_dropout),
                          bce_dropout=float(config.model.bce_dropout), dtype=dtype, param_dtype=param_dtype)
  raise ValueError(f"model.Network must be 'I3DWTrans' or 'FusionNet', got {network!r}")


def sharpness_temperature(config: ml_collections.ConfigDict, epoch: int) -> float:
  """linspace(temp[0], temp[1], 30)[epoch] for epoch < 30, then temp[1]; 1.0 without sharpness."""
  if not config.model.sharpness:
    return 1.0
  start, end = (float(v) for v in config.model.temp)
  if epoch < WARMUP_TEMP_EPOCHS:
    return float(np.linspace(start, end, WARMUP_TEMP_EPOCHS)[max(int(epoch), 0)])
  return end
