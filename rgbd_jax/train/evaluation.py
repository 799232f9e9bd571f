"""Evaluation: one pass over the validation split, and `scripts/evaluate.py`'s entry point.

With `views` (`--views CxS`, see rgbd_jax.data.views) a second pass takes C temporal clips x S
spatial crops of every video and averages each named logit sum over them: `multiview_top1` and
the other `multiview_*` accuracies are reported beside the single-view ones (the original
protocol, unchanged). `named_logits_step` is the forward pass that pass and `rgbd_jax.predict` run.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import functools
import math

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from rgbd_jax import configs
from rgbd_jax import parallel
from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import on_device
from rgbd_jax.data import pipeline
from rgbd_jax.data import sources
from rgbd_jax.data import splits
from rgbd_jax.data import views as views_lib
from rgbd_jax import checkpoint
from rgbd_jax.models import build
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax.models.ops import compile as compile_options
from rgbd_jax.train import metrics as metrics_lib
from rgbd_jax.train import steps


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
  keys = pipeline.batch_keys(config, train=False)
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


def named_logits_step(variables: dict[str, Any], batch: dict[str, jax.Array], hp: dict[str, Any], *,
                      model, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Evaluation-mode forward pass returning every named logit sum per example.

  The batch is the loader's (uint8 clips), preprocessed on the device exactly as in
  `steps.eval_step`; returns {'logits': {name: (B, classes) float32}} ('top1' the headline, then
  e.g. 'top1_xs', 'top1_rgb', ...: `NetworkKind.named_logits`), plus the batch's 'label', 'mask' and
  'index' where present.
  """
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  inputs = on_device.model_inputs(batch, keys, w=int(config.model.w), dtype=build.compute_dtype(config))
  kind = build.network(config)
  out = model.apply(variables, *[inputs[k] for k in kind.input_keys], train=False, temp=hp['temp'])
  logits = {name: v.astype(jnp.float32) for name, v in kind.named_logits(out).items()}
  return {'logits': logits, **{k: batch[k] for k in ('label', 'mask', 'index') if k in batch}}


def jit_named_logits_step(config: ml_collections.ConfigDict):
  """`named_logits_step` jitted: (variables, batch, hparams) -> named logits.

  One jitted function per config (cached on its JSON), so the multi-view evaluation and every
  `Recognizer` of the same network share its compilations: one per input shape.
  """
  return _named_logits_fn(configs.to_json(config))


@functools.lru_cache(maxsize=8)
def _named_logits_fn(config_json: str):
  config = configs.from_json(config_json)
  return jax.jit(functools.partial(named_logits_step, model=build_model(config), config=config),
                 compiler_options=compile_options.compiler_options(int(config.common.xla_opt_level)))


def view_clips(config: ml_collections.ConfigDict, source: sources.Source, record: splits.VideoRecord,
               clip: int, crop: int, views: views_lib.Views) -> dict[str, np.ndarray]:
  """View (clip, crop) of one video: {clip key: (T, S, S, 3) uint8} as the loader's batches carry it."""
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  indices = views_lib.clip_indices(record.frames, int(config.model.sample_duration), clip, views.clips)
  params = views_lib.crop_params(config, crop, views.crops)
  return {keys[stream][0]: clips.load_stream_u8(config, source, record, indices, stream, params, None)
          for stream in layouts.streams(config)}


class _ViewBatches:
  """Batch number -> this process's rows of (video, view) items, video-major; padding masked out."""

  def __init__(self, config, source, views: views_lib.Views, global_batch: int, local_batch: int):
    self.config, self.source, self.views = config, source, views
    self.global_batch, self.local_batch = global_batch, local_batch
    self.items = len(source.records) * len(views)
    self.pairs = list(views)
    self.keys = evaluation_clip_keys(config)
    t, s = int(config.model.sample_duration), int(config.model.sample_size)
    self.empty = np.zeros((t, s, s, 3), np.uint8)

  def __len__(self) -> int:
    return math.ceil(self.items / self.global_batch)

  def _row(self, g: int) -> tuple[dict[str, np.ndarray], int, bool, int]:
    if g >= self.items:
      return {k: self.empty for k in self.keys}, 0, False, -1
    record = self.source.records[g // len(self.views)]
    clip, crop = self.pairs[g % len(self.views)]
    try:
      return view_clips(self.config, self.source, record, clip, crop, self.views), record.label, True, g
    except (FileNotFoundError, ValueError) as e:
      if not self.config.dataset.skip_bad_videos:
        raise
      logging.warning('skipping view %s of video %r (%s entry %d): %s', self.pairs[g % len(self.views)],
                      record.name, self.source.path, record.row, e)
      return {k: self.empty for k in self.keys}, 0, False, -1

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    first = int(step) * self.global_batch + jax.process_index() * self.local_batch
    rows = [self._row(g) for g in range(first, first + self.local_batch)]
    batch = {k: np.stack([r[0][k] for r in rows]) for k in self.keys}
    batch['label'] = np.asarray([r[1] for r in rows], np.int32)
    batch['mask'] = np.asarray([r[2] for r in rows], bool)
    batch['index'] = np.asarray([r[3] for r in rows], np.int32)
    return batch


def evaluation_clip_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The uint8 clip keys of an evaluation batch ('video', or 'rgb' and 'depth')."""
  return tuple(k for k in pipeline.batch_keys(config, train=False) if k not in ('label', 'mask', 'index'))


def evaluate_views(config: ml_collections.ConfigDict, variables: dict[str, Any], mesh, logits_fn,
                   temp: float, views: views_lib.Views | str, progress: bool = True
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The multi-view pass: per video, each named logit sum averaged over the views.

  `logits_fn` is `jit_named_logits_step(config)`. Returns (metrics, arrays): `views` ('CxS'),
  `multiview_<name>` top-1 of each named logits ('multiview_top1' the headline),
  `multiview_num_examples`; arrays `logits` (the averaged headline logits), `labels`, `preds` and
  `index` (split-file rows) of the videos with at least one view loaded.
  """
  views = views_lib.parse(views)
  source = sources.make_source(config, 'valid')
  global_batch = parallel.global_batch_size(config.common.test_batch_size, mesh)
  local_batch = parallel.local_batch_size(config.common.test_batch_size, mesh)
  make = _ViewBatches(config, source, views, global_batch, local_batch)
  threads = max(1, int(config.common.prefetch))
  batches = grain.MapDataset.range(len(make)).map(make).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  hp = steps.hparams(temp, 0.0)
  n = len(source.records)
  sums: dict[str, np.ndarray] = {}
  seen = np.zeros((n,), np.int64)
  bar = tqdm.tqdm(total=len(make), desc=f'evaluate {views} views', leave=False, dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0)
  try:
    for batch in batches:
      out = parallel.to_host(logits_fn(variables, parallel.shard_batch(batch, mesh), hp))
      keep = np.asarray(out['mask'], bool)
      videos = np.asarray(out['index'])[keep] // len(views)
      for name, logits in out['logits'].items():
        acc = sums.setdefault(name, np.zeros((n, logits.shape[-1]), np.float64))
        np.add.at(acc, videos, np.asarray(logits, np.float64)[keep])
      np.add.at(seen, videos, 1)
      bar.update(1)
  finally:
    bar.close()
  done = seen > 0
  if not done.any():
    raise ValueError('the multi-view evaluation loaded no video')
  labels = np.asarray([r.label for r in source.records], np.int64)[done]
  mean = {name: acc[done] / seen[done, None] for name, acc in sums.items()}
  metrics: dict[str, Any] = {'views': str(views)}
  for name, logits in mean.items():
    metrics[f'multiview_{name}'] = float(np.mean(np.argmax(logits, -1) == labels))
  metrics['multiview_num_examples'] = int(done.sum())
  arrays = {'logits': mean['top1'].astype(np.float32), 'labels': labels.astype(np.int32),
            'preds': np.argmax(mean['top1'], -1).astype(np.int32),
            'index': np.asarray([r.row for r in source.records], np.int32)[done]}
  return metrics, arrays


def source_variables(workdir: str, checkpoint_path: str, which: str,
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
        save_output: bool = False, output: str = '', views: str | None = None,
        vis_dir: str = '', vis_count: int = 8, labels: str = '') -> dict[str, Any]:
  """Evaluates a checkpoint on the validation split; returns the metrics.

  `epoch` (for the sharpness temperature; the epoch convention of
  rgbd_jax.checkpoint) defaults to the epoch that trained the weights, as the
  original's `--eval_only` does. Without sharpness the temperature is 1 and no
  epoch is needed. `views` ('CxS') adds the multi-view pass (`evaluate_views`);
  `vis_dir` receives pictures (`rgbd_jax.train.visualize`) of the `vis_count`
  videos whose true class got the lowest probability, class names from
  `labels` (a file) or the dataset's list.
  """
  parallel.initialize_from_env()
  checkpoint.quiet_orbax_logs()
  config, variables, saved_epoch, what = source_variables(workdir, checkpoint_path, which, config)
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
  multiview = None
  if views is not None:
    parsed = views_lib.parse(views)
    view_results, multiview = evaluate_views(config, variables, mesh, jit_named_logits_step(config),
                                             temp, parsed)
    results = {**results, **view_results}
    logging.info('single-view top1 %.4f, %s-view top1 %.4f', results['top1'], parsed,
                 results['multiview_top1'])
  if vis_dir and jax.process_index() == 0:
    from rgbd_jax.train import visualize  # pylint: disable=g-import-not-at-top  # matplotlib only when asked
    written = visualize.worst_videos(config, variables, arrays, temp, vis_dir, count=vis_count, labels=labels)
    logging.info('pictures of the %d worst-classified videos written to %s', len(written), vis_dir)
  if save_output:
    # The original writes `<type>-output.pth` into its run directory.
    output = output or os.path.join(workdir or '.', f'{config.dataset.type}-output.npz')
    records = splits.read_split(splits.split_file(config, 'valid'))
    names = np.asarray([records[i].name for i in arrays['index']])
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
      extra = {}
      if multiview is not None:  # the averaged logits of the videos in `names` order
        position = {int(r): i for i, r in enumerate(multiview['index'])}
        rows = [position.get(int(r), -1) for r in arrays['index']]
        extra['multiview_logits'] = np.stack([multiview['logits'][i] if i >= 0 else
                                              np.full_like(multiview['logits'][0], np.nan) for i in rows])
      np.savez(output, names=names, logits=arrays['logits'], labels=arrays['labels'],
               preds=arrays['preds'], **extra)
      logging.info('per-video logits written to %s', output)
  return {'source': what, 'epoch': epoch, 'temperature': temp, **results}


def print_results(results: dict[str, Any]) -> None:
  for k, v in results.items():
    if isinstance(v, float):
      print(f'{k:>14s}: {v:.4f}')
  if 'multiview_top1' in results:
    print(f'single-view top1 {results["top1"]:.4f}, {results["views"]} views top1 '
          f'{results["multiview_top1"]:.4f}')
  print(json.dumps(results))
