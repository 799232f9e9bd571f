"""The two conversions of scripts/convert_weights.py, as importable functions."""

from __future__ import annotations

import logging

import ml_collections

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import


def torch_to_orbax(src: str, dst: str, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Original .pth.tar -> Orbax variables directory (+ the resolved config and info.json); returns that config."""
  config, variables, info = torch_import.load_torch_checkpoint_with_info(src, config)
  checkpoint.save_variables(dst, variables, config, info=info)
  counts = {k: sum(1 for _ in _leaves(v)) for k, v in variables.items()}
  logging.info('converted %s -> %s: %s network, N=%d, SEHeads=%d, %d classes, %s; %s', src, dst,
               config.model.Network, config.model.N, config.model.SEHeads, configs.num_classes(config),
               ', '.join(f'{n} {k} arrays' for k, n in counts.items()), _describe(info))
  return config


def orbax_to_torch(src: str, dst: str, which: str = 'best', epoch: int | None = None,
                   bestacc: float | None = None) -> None:
  """Orbax variables directory or training workdir -> original .pth.tar the original loads and resumes.

  `epoch` (the epoch convention of rgbd_jax.checkpoint: the epoch that trained the weights) and
  `bestacc` (percent) default to what the source records; the file's `epoch` field is epoch + 1.
  """
  config, variables = checkpoint.load_variables(src, which)
  info = checkpoint.load_info(src, which)
  trained_epoch = info['trained_epoch'] if epoch is None else epoch
  if bestacc is None:
    bestacc = 100.0 * info['best_top1'] if info['best_top1'] is not None else 0.0
  if trained_epoch is None:
    logging.warning('%s does not record its epoch: writing epoch 0 (give --epoch)', src)
  field = checkpoint.to_torch_epoch(trained_epoch) if trained_epoch is not None else 0
  state_dict = torch_export.variables_to_state_dict(variables, config,
                                                    num_batches_tracked=info['num_batches_tracked'])
  torch_export.save_torch_checkpoint(dst, state_dict, epoch=field, bestacc=bestacc, config=config)
  logging.info('wrote %s: %d tensors of a %s network, trained through epoch %s (file epoch %d), '
               'bestacc %.4g%%, with an optimizer entry', dst, len(state_dict), config.model.Network,
               trained_epoch, field, bestacc)


def _describe(info: dict) -> str:
  epoch = info.get('trained_epoch')
  best = info.get('best_top1')
  return (f'trained through epoch {epoch}' if epoch is not None else 'epoch unknown') + (
      f', best top-1 {best:.4f}' if best is not None else '')


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree
