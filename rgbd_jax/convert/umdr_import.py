"""The journal fusion's three checkpoints -> one UMDRFusion variable tree, and back.

`train_fusion.py` keeps three files: each stream's own DSNV2 checkpoint
(`rgb_checkpoint`, `depth_checkpoint`, read by `FeatureCapter` with a strict
load) and the fusion network's (`CrossFusionNet`, its own keys only). The
port holds them in one tree, the streams under `Modalit_rgb` /
`Modalit_depth`:

    config, variables = load_checkpoint('fusion.pth.tar', config)   # streams from config.model.*_checkpoint
    fusion, rgb, depth = umdr_layout.split_fusion_state_dict(variables_to_state_dict(variables, config))

Any other checkpoint goes through `torch_import` unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import ml_collections
import numpy as np

from rgbd_jax.convert import torch_import
from rgbd_jax.convert import torch_layout
from rgbd_jax.convert import umdr_layout
from rgbd_jax.models import build


def _stream(path: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  if not path:
    raise ValueError(f'a journal fusion checkpoint holds only the fusion network: its {what} stream is '
                     f'model.{what}_checkpoint, which is not set (the original keeps three checkpoints)')
  state_dict, meta = torch_import.read_state_dict(path)
  if umdr_layout.looks_like(state_dict) != 'DSNV2':
    raise ValueError(f'{path} (model.{what}_checkpoint) is not a DSNV2 checkpoint: '
                     f'{torch_layout.nearest_layout_report(state_dict)}')
  return state_dict, meta


def merge_fusion(fusion: Mapping[str, np.ndarray], rgb: Mapping[str, np.ndarray],
                 depth: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The three state_dicts as one, the streams under their FeatureCapter prefixes."""
  merged = dict(fusion)
  for prefix, sd in zip(umdr_layout.STREAMS, (rgb, depth)):
    merged.update({prefix + k: v for k, v in sd.items()})
  return merged


def load_checkpoint(path: str, config: ml_collections.ConfigDict, dtype: Any = None
                    ) -> tuple[ml_collections.ConfigDict, dict]:
  """(config with the checkpoint's architecture, variables) of any original checkpoint.

  A journal fusion checkpoint brings its streams from `model.rgb_checkpoint`
  and `model.depth_checkpoint`; their epoch sets `model.stream_epoch` (the
  streams' sharpness temperature, as FeatureCapter does) unless it is set.
  """
  state_dict, meta = torch_import.read_state_dict(path)
  if umdr_layout.looks_like(state_dict) == 'UMDRFusion-only':
    rgb, rgb_meta = _stream(config.model.rgb_checkpoint, 'rgb')
    depth, depth_meta = _stream(config.model.depth_checkpoint, 'depth')
    state_dict = merge_fusion(state_dict, rgb, depth)
    epochs = [m['epoch'] for m in (rgb_meta, depth_meta) if 'epoch' in m]
    if epochs and int(config.model.stream_epoch) < 0:
      if len(set(epochs)) > 1:
        logging.warning('the rgb and depth checkpoints were saved at epochs %s: the original gives each stream '
                        'its own temperature, this port one; using the rgb stream\'s', epochs)
      config = config.copy_and_resolve_references()
      config.model.stream_epoch = int(epochs[0]) - 1  # FeatureCapter: args.epoch = checkpoint epoch - 1
  found = torch_layout.infer_architecture(state_dict)
  logging.info('%s: architecture read from the tensors: %s', path, ', '.join(f'{k}={v}' for k, v in found.items()))
  config = torch_layout.apply_architecture(config, found)
  target = build.variable_shapes(config)
  variables = torch_import.state_dict_to_variables(state_dict, target,
                                                   dtype or np.dtype(build.param_dtype(config)))
  return config, variables
