"""The journal fusion's three checkpoints -> one UMDRFusion variable tree, and back.

`train_fusion.py` keeps three files: each stream's own DSNV2 checkpoint
(`rgb_checkpoint`, `depth_checkpoint`, read by `FeatureCapter` with a strict
load) and the fusion network's (`CrossFusionNet`, its own keys only). The
port holds them in one tree, the streams under `Modalit_rgb` /
`Modalit_depth`:

    config, variables, info = load_checkpoint('fusion.pth.tar', config)   # streams from config.model.*_checkpoint
    model = build.build_model(config, info['stream_epochs'])             # each stream at its own epoch
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
                    ) -> tuple[ml_collections.ConfigDict, dict, dict[str, Any]]:
  """(config with the checkpoint's architecture, variables, info) of any original checkpoint.

  A journal fusion checkpoint brings its streams from `model.rgb_checkpoint`
  and `model.depth_checkpoint` (their files are not needed afterwards: the
  variables hold all three). `info` is what the files say of the weights
  (`checkpoint.load_info`'s keys, of the fusion network's own file; the BatchNorm
  counters of all three) and, for the fusion, `stream_epochs` (stream -> the
  epoch that trained it: its file's epoch - 1, whose temperature FeatureCapter
  runs it at; `build.build_model(config, info['stream_epochs'])`),
  `stream_best_top1` and `stream_checkpoints` (the paths read).
  """
  state_dict, meta = torch_import.read_state_dict(path)
  if umdr_layout.looks_like(state_dict) != 'UMDRFusion-only':
    return torch_import.from_state_dict(state_dict, meta, config, dtype, path)
  streams = {what: _stream(config.model[f'{what}_checkpoint'], what) for what in build.STREAMS}
  state_dict = merge_fusion(state_dict, streams['rgb'][0], streams['depth'][0])
  config, variables, info = torch_import.from_state_dict(state_dict, meta, config, dtype, path)
  stream_info = {what: torch_import.checkpoint_info({}, m) for what, (_, m) in streams.items()}
  info['stream_epochs'] = {what: i['trained_epoch'] for what, i in stream_info.items()}
  info['stream_best_top1'] = {what: i['best_top1'] for what, i in stream_info.items()}
  info['stream_checkpoints'] = {what: str(config.model[f'{what}_checkpoint']) for what in build.STREAMS}
  used = dict(zip(build.STREAMS, build.stream_epochs(config, info['stream_epochs'])))
  logging.info('%s: streams from %s, trained through epochs %s: run at the temperatures of epochs %s', path,
               ' and '.join(info['stream_checkpoints'].values()), info['stream_epochs'], used)
  return config, variables, info
