"""Evaluation: one pass over the validation split, and `scripts/evaluate.py`'s entry point."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tqdm

from rgbd_jax import parallel
from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import pipeline
from rgbd_jax.data import splits
from rgbd_jax import checkpoint
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax.train import metrics as metrics_lib
from rgbd_jax.train import steps


def batch_keys(config: ml_collections.ConfigDict, train: bool) -> tuple[str, ...]:
  """Batch entries the jitted steps read: the uint8 clips (the heatmaps are made on the device) and labels."""
  pairs = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  keys = tuple(pairs[stream][0] for stream in layouts.streams(config)) + ('label',)  # uint8 clips
  return keys if train else keys + ('mask', 'index')


def loader(config: ml_collections.ConfigDict, phase: str, global_batch: int, shuffle: bool):
  """This process's shard of the `phase` input (see rgbd_jax.data.pipeline)."""
  return pipeline.make_loader(
      config, phase, global_batch_size=global_batch, seed=int(config.common.seed),
      process_index=jax.process_index(), process_count=jax.process_count(), shuffle=shuffle)


def evaluate(config: ml_collections.ConfigDict, variables: dict[str, Any], mesh, eval_fn,
             temp: float, progress: bool = True, should_stop: Callable[[], bool] | None = None
             ) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
  """One pass over the validation split.

  Returns (metrics, per-example arrays): top-1 of every named logit sum
  ('top1' = the merged logits), the CE loss, and labels / predictions / headline
  logits / split-file rows of the real (unpadded) examples. None when
  `should_stop()` turned True before the pass ended (a stop signal).
  """
  global_batch = parallel.global_batch_size(config.common.test_batch_size, mesh)
  n_steps = pipeline.steps_per_epoch(config, 'valid', global_batch)
  keys = batch_keys(config, train=False)
  acc = metrics_lib.EvalAccumulator()
  hp = steps.hparams(temp, 0.0)
  bar = tqdm.tqdm(total=n_steps, desc='evaluate', leave=False, dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0)
  batches = loader(config, 'valid', global_batch, shuffle=False)
  try:
    for batch in batches:
      if should_stop is not None and should_stop():
        return None
      out = parallel.to_host(eval_fn(variables, parallel.shard_batch({k: batch[k] for k in keys}, mesh), hp))
      acc.add(out, out['label'], out['mask'], out['index'])
      bar.update(1)
  finally:
    bar.close()
    batches.close()
  return acc.result(), acc.arrays()


def _source_variables(workdir: str, checkpoint_path: str, which: str,
                      config: ml_collections.ConfigDict | None):
  """(config, variables, epoch that trained the weights or None, description) of what to evaluate."""
  if workdir:
    if checkpoint_path:
      raise ValueError('give either --workdir or --checkpoint, not both')
    if not os.path.isdir(workdir):
      raise FileNotFoundError(f'workdir not found: {workdir}')
    ckpts = checkpoint.TrainCheckpoints(workdir)
    try:
      state, meta = ckpts.restore_state_tree(which)
    finally:
      ckpts.close()
    saved = checkpoint.read_config(workdir)
    epoch = int(meta['trained_epoch'])
    return (config or saved, {'params': state['params'], 'batch_stats': state['batch_stats']},
            epoch, f'{which} checkpoint of {workdir} (step {meta["step"]}, epoch {epoch})')
  if not checkpoint_path:
    raise ValueError('give --workdir (a training run) or --checkpoint (a .pth.tar or converted dir)')
  if os.path.isdir(checkpoint_path):
    saved, variables = checkpoint.load_variables(checkpoint_path, which)
    epoch = checkpoint.load_info(checkpoint_path, which)['trained_epoch']
    return config or saved, variables, epoch, f'checkpoint {checkpoint_path}'
  if config is None:
    raise ValueError(f'--checkpoint {checkpoint_path} is a PyTorch file: give --config for its dataset')
  from rgbd_jax.convert import torch_import  # pylint: disable=g-import-not-at-top
  config, variables, info = torch_import.load_torch_checkpoint_with_info(checkpoint_path, config)
  return config, variables, info['trained_epoch'], f'PyTorch checkpoint {checkpoint_path}'


def run(*, workdir: str = '', checkpoint_path: str = '', which: str = 'best',
        config: ml_collections.ConfigDict | None = None, epoch: int | None = None,
        save_output: bool = False, output: str = '') -> dict[str, Any]:
  """Evaluates a checkpoint on the validation split; returns the metrics.

  `epoch` (for the sharpness temperature; the epoch convention of
  rgbd_jax.checkpoint) defaults to the epoch that trained the weights, as the
  original's `--eval_only` does. Without sharpness the temperature is 1 and no
  epoch is needed.
  """
  parallel.initialize_from_env()
  checkpoint.quiet_orbax_logs()
  config, variables, saved_epoch, what = _source_variables(workdir, checkpoint_path, which, config)
  epoch = saved_epoch if epoch is None else epoch
  if epoch is None and config.model.sharpness:
    raise ValueError(f'{what} does not say which epoch trained it, and the sharpness temperature '
                     f'depends on it: give --epoch')
  temp = sharpness_temperature(config, 0 if epoch is None else epoch)
  logging.info('evaluating %s with temperature %.5f (%s)', what, temp,
               f"epoch {epoch}'s" if epoch is not None else 'no sharpness')
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  variables = jax.device_put(variables, replicated)
  model = build_model(config)
  results, arrays = evaluate(config, variables, mesh, steps.jit_eval_step(model, config), temp)
  if save_output:
    # The original writes `<type>-output.pth` into its run directory.
    output = output or os.path.join(workdir or '.', f'{config.dataset.type}-output.npz')
    records = splits.read_split(splits.split_file(config, 'valid'))
    names = np.asarray([records[i].name for i in arrays['index']])
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
      np.savez(output, names=names, logits=arrays['logits'], labels=arrays['labels'],
               preds=arrays['preds'])
      logging.info('per-video logits written to %s', output)
  return {'source': what, 'epoch': epoch, 'temperature': temp, **results}


def print_results(results: dict[str, Any]) -> None:
  for k, v in results.items():
    if isinstance(v, float):
      print(f'{k:>14s}: {v:.4f}')
  print(json.dumps(results))
