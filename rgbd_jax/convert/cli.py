"""The two conversions of scripts/convert_weights.py, as importable functions."""

from __future__ import annotations

import logging

import ml_collections

from rgbd_jax import configs
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import


def torch_to_orbax(src: str, dst: str, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Original .pth.tar -> Orbax variables directory (+ the resolved config); returns that config."""
  from rgbd_jax import checkpoint  # pylint: disable=g-import-not-at-top
  config, variables = torch_import.load_torch_checkpoint(src, config)
  checkpoint.save_variables(dst, variables, config)
  counts = {k: sum(1 for _ in _leaves(v)) for k, v in variables.items()}
  logging.info('converted %s -> %s: %s network, N=%d, SEHeads=%d, %d classes, %s', src, dst,
               config.model.Network, config.model.N, config.model.SEHeads, configs.num_classes(config),
               ', '.join(f'{n} {k} arrays' for k, n in counts.items()))
  return config


def orbax_to_torch(src: str, dst: str, epoch: int = 0, bestacc: float = 0.0) -> None:
  """Orbax variables directory or training workdir -> original .pth.tar."""
  from rgbd_jax import checkpoint  # pylint: disable=g-import-not-at-top
  config, variables = checkpoint.load_variables(src)
  state_dict = torch_export.variables_to_state_dict(variables, config)
  torch_export.save_torch_checkpoint(dst, state_dict, epoch=epoch, bestacc=bestacc)
  logging.info('wrote %s: %d tensors of a %s network (epoch %d, bestacc %g)', dst, len(state_dict),
               config.model.Network, epoch, bestacc)


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree
