"""The two conversions of scripts/convert_weights.py, as importable functions."""

from __future__ import annotations

import logging

import ml_collections

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import umdr_import
from rgbd_jax.convert import umdr_layout
from rgbd_jax.models import build


def torch_to_orbax(src: str, dst: str, config: ml_collections.ConfigDict, rgb_checkpoint: str = '',
                   depth_checkpoint: str = '') -> ml_collections.ConfigDict:
  """Original .pth.tar -> Orbax variables directory (+ the resolved config and info.json); returns that config.

  The journal fusion's own checkpoint takes its two stream checkpoints (`rgb_checkpoint`,
  `depth_checkpoint`, else model.rgb_checkpoint / model.depth_checkpoint): the directory then holds
  all three networks, each stream's epoch in info.json (its temperature), and evaluate.py / predict.py
  need none of the files.
  """
  config = config.copy_and_resolve_references()
  for what, path in (('rgb', rgb_checkpoint), ('depth', depth_checkpoint)):
    if path:
      config.model[f'{what}_checkpoint'] = path
  config, variables, info = umdr_import.load_checkpoint(src, config)
  if 'stream_epochs' in info:
    # the streams are in the variables now; a training run from this config must not reload them
    config.model.rgb_checkpoint = config.model.depth_checkpoint = ''
  checkpoint.save_variables(dst, variables, config, info=info)
  counts = {k: sum(1 for _ in _leaves(v)) for k, v in variables.items()}
  logging.info('converted %s -> %s: %s network, N=%d, SEHeads=%d, %d classes, %s; %s', src, dst,
               config.model.Network, config.model.N, config.model.SEHeads, configs.num_classes(config),
               ', '.join(f'{n} {k} arrays' for k, n in counts.items()), _describe(info))
  return config


def orbax_to_torch(src: str, dst: str, which: str = 'best', epoch: int | None = None,
                   bestacc: float | None = None, rgb_out: str = '', depth_out: str = '') -> None:
  """Orbax variables directory or training workdir -> original .pth.tar the original loads and resumes.

  `epoch` (the epoch convention of rgbd_jax.checkpoint: the epoch that trained the weights) and
  `bestacc` (percent) default to what the source records; the file's `epoch` field is epoch + 1.
  The journal fusion network is written as the original keeps it: the fusion network's own tensors
  in `dst`, each stream's DSNV2 checkpoint in `rgb_out` / `depth_out` (required then).
  """
  config, variables = checkpoint.load_variables(src, which)
  info = checkpoint.load_info(src, which)
  separate = umdr_layout.streams_in_own_files(config.model.Network)
  if separate and not (rgb_out and depth_out):
    raise ValueError(f'{src} holds the journal fusion network, which the original keeps in three checkpoints: '
                     'give --rgb_out and --depth_out for its two streams (--out is the fusion network\'s)')
  if not separate and (rgb_out or depth_out):
    raise ValueError(f'{src} holds a {config.model.Network} network, one checkpoint: --rgb_out and --depth_out '
                     'are for the journal fusion network (UMDRFusion)')
  trained_epoch = info['trained_epoch'] if epoch is None else epoch
  if bestacc is None:
    bestacc = 100.0 * info['best_top1'] if info['best_top1'] is not None else 0.0
  if trained_epoch is None:
    logging.warning('%s does not record its epoch: writing epoch 0 (give --epoch)', src)
  field = checkpoint.to_torch_epoch(trained_epoch) if trained_epoch is not None else 0
  state_dict = torch_export.variables_to_state_dict(variables, config,
                                                    num_batches_tracked=info['num_batches_tracked'])
  if not separate:
    torch_export.save_torch_checkpoint(dst, state_dict, epoch=field, bestacc=bestacc, config=config)
    logging.info('wrote %s: %d tensors of a %s network, trained through epoch %s (file epoch %d), '
                 'bestacc %.4g%%, with an optimizer entry', dst, len(state_dict), config.model.Network,
                 trained_epoch, field, bestacc)
    return
  fusion, rgb, depth = umdr_layout.split_fusion_state_dict(state_dict)
  # FeatureCapter reads each stream file's epoch (its temperature: epoch - 1) and bestacc; the journal's
  # --resume also wants timm's optimiser and a scheduler entry, which are not written.
  torch_export.save_torch_checkpoint(dst, fusion, epoch=field, bestacc=bestacc)
  logging.info('wrote %s: the fusion network\'s %d tensors, trained through epoch %s (file epoch %d)', dst,
               len(fusion), trained_epoch, field)
  epochs = dict(zip(build.STREAMS, build.stream_epochs(config, info.get('stream_epochs'))))
  best = info.get('stream_best_top1') or {}
  for what, sd, path in (('rgb', rgb, rgb_out), ('depth', depth, depth_out)):
    acc = 100.0 * best[what] if best.get(what) is not None else 0.0
    torch_export.save_torch_checkpoint(path, sd, epoch=checkpoint.to_torch_epoch(epochs[what]), bestacc=acc)
    logging.info('wrote %s: the %s stream\'s %d tensors (DSNV2), trained through epoch %d (file epoch %d), '
                 'bestacc %.4g%%', path, what, len(sd), epochs[what], checkpoint.to_torch_epoch(epochs[what]), acc)


def _describe(info: dict) -> str:
  epoch = info.get('trained_epoch')
  best = info.get('best_top1')
  text = (f'trained through epoch {epoch}' if epoch is not None else 'epoch unknown') + (
      f', best top-1 {best:.4f}' if best is not None else '')
  if info.get('stream_epochs'):
    text += ', streams ' + ', '.join(f'{k} epoch {v}' for k, v in info['stream_epochs'].items())
  return text


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree
