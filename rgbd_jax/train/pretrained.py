"""Initial weights from earlier runs: `model.pretrained`, `rgb_checkpoint`, `depth_checkpoint`.

A source is a PyTorch checkpoint of the original (`.pth.tar`), a directory
written by `save_variables` (converted weights), or a training workdir (its
best checkpoint). Orbax sources are turned into the original's state_dict
first, so one set of partial-loading rules (the converter's `load_pretrained`,
which follows the original's `load_pretrained_checkpoint`) serves both.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import ml_collections
import numpy as np

from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import
from rgbd_jax.models import build
from rgbd_jax import checkpoint


def read_source(path: str) -> dict[str, np.ndarray]:
  """The original-layout state_dict of a checkpoint file, variables dir or workdir."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'pretrained checkpoint not found: {path}')
  if os.path.isdir(path):
    saved_config, variables = checkpoint.load_variables(path)
    return dict(torch_export.variables_to_state_dict(variables, saved_config, dtype=np.float64))
  state_dict, _ = torch_import.read_state_dict(path)
  return state_dict


# The journal's fine-tuning loader (utils/utils.py `load_pretrained_checkpoint`) leaves out DSNNetV2's
# three classification Linears by name, besides every tensor whose shape does not fit (their
# LayerNorms load); the converter's HEAD_PATTERN names the conference's heads.
JOURNAL_HEAD_PATTERN = re.compile(r'^dtn\.multi_scale_transformers\.[012]\.3\.2\.(weight|bias)$')


def without_journal_heads(state_dict: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
  """`state_dict` less the journal's classification layers, logging which were left out."""
  heads = sorted(k for k in state_dict if JOURNAL_HEAD_PATTERN.match(k))
  if heads:
    logging.info('%s: classification layers not loaded (fine-tuning): %s', what, ', '.join(heads))
  return {k: v for k, v in state_dict.items() if k not in heads}


def _load(path: str, variables: dict[str, Any], what: str, *, skip_journal_heads: bool = False,
          **kwargs) -> dict[str, Any]:
  state_dict = read_source(path)
  if skip_journal_heads:
    state_dict = without_journal_heads(state_dict, f'{what} from {path}')
  loaded, report = torch_import.load_pretrained(state_dict, variables, **kwargs)
  logging.info('%s from %s: %s', what, path, report.summary())
  if not report.loaded:
    raise ValueError(f'{what}: nothing in {path} fits this network ({report.summary()})')
  return loaded


def checkpoint_epoch(path: str) -> int | None:
  """The epoch that trained a checkpoint (file, variables dir or workdir's best), None if unrecorded."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'stream checkpoint not found: {path}')
  if os.path.isdir(path):
    return checkpoint.load_info(path)['trained_epoch']
  _, meta = torch_import.read_state_dict(path)
  return torch_import.checkpoint_info({}, meta)['trained_epoch']


def stream_epochs(config: ml_collections.ConfigDict) -> dict[str, int | None] | None:
  """UMDRFusion: stream -> the epoch its checkpoint (`model.<stream>_checkpoint`) records, for the
  frozen stream's sharpness temperature, as the journal's FeatureCapter sets it from each stream's
  own file (`build.stream_epochs` applies `model.stream_epoch` and the default). None for networks
  whose streams have no epochs of their own."""
  kind = build.network(config)
  if kind.build_with_stream_epochs is None:
    return None
  epochs = {}
  for (_, key), stream in zip(kind.stream_checkpoints, build.STREAMS):
    path = config.model[key]
    epochs[stream] = checkpoint_epoch(path) if path else None
  return epochs


def initial_variables(config: ml_collections.ConfigDict, fresh: dict[str, Any]) -> dict[str, Any]:
  """`fresh` variables with the configured pretrained weights loaded into them.

  FusionNet, as the original's CrossFusionNet: each stream from its unimodal
  checkpoint (classification heads skipped), then `pretrained` over the whole
  network. UMDRFusion: each stream whole, heads included (they give its logits).
  Unimodal (I3DWTrans, DSNV2): `pretrained` with the heads skipped (fine-tuning).
  """
  m = config.model
  kind = build.network(config)
  variables = fresh
  for prefix, key in kind.stream_checkpoints:
    if m[key]:
      variables = _load(m[key], variables, f'{prefix[:-1]} stream', prefix=prefix, skip_heads=True)
    else:
      logging.warning('%s: no %s checkpoint given (model.%s); that stream starts at random '
                      '(the original requires each)', kind.name, prefix[:-1], key)
  if m.pretrained:
    # Over a whole fusion network the original's loader skips only the unimodal heads' names,
    # so the fusion classifiers load too when their shapes match; a unimodal network is
    # fine-tuned, its heads skipped.
    fine_tune = not kind.stream_checkpoints
    variables = _load(m.pretrained, variables, f'pretrained {kind.name}', skip_heads=fine_tune,
                      skip_journal_heads=fine_tune)
  return variables
