"""Evaluation: one pass over the validation split, and `scripts/evaluate.py`'s entry point.

With `views` (`--views CxS`, see rgbd_jax.data.views) a pass takes C temporal clips x S spatial
crops of every video and averages each named logit sum over them: `multiview_top1` and the other
`multiview_*` accuracies are reported beside the single-view ones (the original protocol). For odd
C and S the middle view is the single-view clip, and the single-view results are taken from it
instead of a second pass. `named_logits_step` is the forward pass that pass and `rgbd_jax.predict` run.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, NamedTuple

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
from rgbd_jax.models import losses as losses_lib
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax.models.ops import compile as compile_options
from rgbd_jax.train import device_prefetch
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
  batches = device_prefetch.DevicePrefetch(loader(config, 'valid', global_batch, shuffle=False), mesh, keys)
  try:
    for out in host_results(batches, lambda batch: eval_fn(variables, batch, hp), should_stop):
      acc.add(out, out['label'], out['mask'], out['index'])
      bar.update(1)
  except _Stopped:
    return None
  finally:
    bar.close()
    batches.close()
  return acc.result(), acc.arrays()


class _Stopped(Exception):
  """`should_stop()` turned True before a batch of the pass."""


def host_results(batches: Iterable[dict[str, jax.Array]], step: Callable[[dict[str, jax.Array]], Any],
                 should_stop: Callable[[], bool] | None = None) -> Iterator[Any]:
  """`step(batch)` of each device batch, on the host, in order. Each step's results are fetched once
  the next step is dispatched, so the device does not wait for the host between batches (with
  `DevicePrefetch`, the next batch is on the device already). Raises `_Stopped` when `should_stop()`
  is True before a batch."""
  pending = None
  for batch in batches:
    if should_stop is not None and should_stop():
      raise _Stopped
    out = step(batch)
    if pending is not None:
      yield parallel.to_host(pending)
    pending = out
  if pending is not None:
    yield parallel.to_host(pending)


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


def jit_named_logits_step(config: ml_collections.ConfigDict,
                          stream_epochs: dict[str, int | None] | None = None):
  """`named_logits_step` jitted: (variables, batch, hparams) -> named logits.

  One jitted function per config and stream epochs (`build.build_model`; cached on the config's
  JSON), so the multi-view evaluation and every `Recognizer` of the same network share its
  compilations: one per input shape.
  """
  key = None if stream_epochs is None else tuple(sorted(stream_epochs.items()))
  return _named_logits_fn(configs.to_json(config), key)


@functools.lru_cache(maxsize=8)
def _named_logits_fn(config_json: str, stream_epochs: tuple[tuple[str, int | None], ...] | None):
  config = configs.from_json(config_json)
  model = build_model(config, None if stream_epochs is None else dict(stream_epochs))
  return jax.jit(functools.partial(named_logits_step, model=model, config=config),
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
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray], SingleView | None]:
  """The multi-view pass: per video, each named logit sum averaged over the views.

  `logits_fn` is `jit_named_logits_step(config)`. Returns (metrics, arrays, single): `views` ('CxS'),
  `multiview_<name>` top-1 of each named logits ('multiview_top1' the headline),
  `multiview_num_examples`; arrays `logits` (the averaged headline logits), `labels`, `preds` and
  `index` (split-file rows) of the videos with at least one view loaded. For odd C and S the middle
  view is the single-view clip: `single` is then `evaluate`'s (metrics, arrays) from its logits
  (`single_view_results`), else None.
  """
  views = views_lib.parse(views)
  source = sources.make_source(config, 'valid')
  global_batch = parallel.global_batch_size(config.common.test_batch_size, mesh)
  local_batch = parallel.local_batch_size(config.common.test_batch_size, mesh)
  make = _ViewBatches(config, source, views, global_batch, local_batch)
  threads = max(1, int(config.common.prefetch))
  batches = device_prefetch.DevicePrefetch(iter(grain.MapDataset.range(len(make)).map(make).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))), mesh)
  hp = steps.hparams(temp, 0.0)
  n = len(source.records)
  middle = middle_view(views)
  sums: dict[str, np.ndarray] = {}
  single: dict[str, np.ndarray] = {}
  seen = np.zeros((n,), np.int64)
  single_seen = np.zeros((n,), bool)
  bar = tqdm.tqdm(total=len(make), desc=f'evaluate {views} views', leave=False, dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0)
  try:
    for out in host_results(batches, lambda batch: logits_fn(variables, batch, hp)):
      keep = np.asarray(out['mask'], bool)
      items = np.asarray(out['index'])[keep]
      videos = items // len(views)
      is_middle = items % len(views) == middle if middle is not None else np.zeros_like(keep[keep])
      for name, logits in out['logits'].items():
        acc = sums.setdefault(name, np.zeros((n, logits.shape[-1]), np.float64))
        np.add.at(acc, videos, np.asarray(logits, np.float64)[keep])
        if is_middle.any():
          rows = single.setdefault(name, np.zeros((n, logits.shape[-1]), np.float32))
          rows[videos[is_middle]] = np.asarray(logits, np.float32)[keep][is_middle]
      np.add.at(seen, videos, 1)
      single_seen[videos[is_middle]] = True
      bar.update(1)
  finally:
    bar.close()
    batches.close()
  done = seen > 0
  if not done.any():
    raise ValueError('the multi-view evaluation loaded no video')
  all_labels = np.asarray([r.label for r in source.records], np.int64)
  rows = np.asarray([r.row for r in source.records], np.int32)
  labels = all_labels[done]
  mean = {name: acc[done] / seen[done, None] for name, acc in sums.items()}
  metrics: dict[str, Any] = {'views': str(views)}
  for name, logits in mean.items():
    metrics[f'multiview_{name}'] = float(np.mean(np.argmax(logits, -1) == labels))
  metrics['multiview_num_examples'] = int(done.sum())
  arrays = {'logits': mean['top1'].astype(np.float32), 'labels': labels.astype(np.int32),
            'preds': np.argmax(mean['top1'], -1).astype(np.int32), 'index': rows[done]}
  if middle is None:
    return metrics, arrays, None
  if not single_seen.any():
    raise ValueError('the multi-view evaluation loaded no middle view (the single-view clip) of any video')
  middle_logits = {name: v[single_seen] for name, v in single.items()}
  return metrics, arrays, single_view_results(config, middle_logits, all_labels[single_seen], rows[single_seen])


SingleView = tuple[dict[str, Any], dict[str, np.ndarray]]


def middle_view(views: views_lib.Views) -> int | None:
  """The position (clip-major) of the view that is the single-view clip, for odd C and S; else None.

  rgbd_jax.data.views: temporal clip C // 2 of odd C takes the evaluation sampling's frames, crop
  S // 2 of odd S is the evaluation's centre crop.
  """
  if views.clips % 2 == 0 or views.crops % 2 == 0:
    return None
  return (views.clips // 2) * views.crops + views.crops // 2


def single_view_results(config: ml_collections.ConfigDict, logits: dict[str, np.ndarray], labels: np.ndarray,
                        rows: np.ndarray) -> SingleView:
  """`evaluate`'s (metrics, arrays) from each video's single-view named logits (float32, 'top1' first).

  The accuracies, predictions and logits are exactly `evaluate`'s for the same logits; its `ce_loss`
  (the label-smoothing CE of the headline logits, float32) is summed in another order: equal to
  float32 rounding.
  """
  labels = np.asarray(labels, np.int64)
  metrics: dict[str, Any] = {name: float(np.mean(np.argmax(v, -1) == labels)) for name, v in logits.items()}
  ce = losses_lib.label_smoothing_ce(jnp.asarray(logits['top1']), jnp.asarray(labels, jnp.int32),
                                     eps=configs.label_smoothing(config))
  metrics['ce_loss'] = float(ce)
  metrics['num_examples'] = int(len(labels))
  arrays = {'labels': labels.astype(np.int32), 'preds': np.argmax(logits['top1'], -1).astype(np.int32),
            'logits': np.asarray(logits['top1'], np.float32), 'index': np.asarray(rows, np.int32)}
  return metrics, arrays


class Weights(NamedTuple):
  """What to evaluate: `source_variables`' answer."""
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  epoch: int | None                        # the epoch that trained the weights (None: unknown)
  what: str                                # in words, for the logs
  stream_epochs: dict[str, int] | None = None  # UMDRFusion: each frozen stream's epoch (build.stream_epochs)


def source_variables(workdir: str, checkpoint_path: str, which: str,
                     config: ml_collections.ConfigDict | None) -> Weights:
  """The config, variables and epochs of a training workdir, converted directory or original .pth.tar."""
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
    return Weights(config or saved, {'params': state['params'], 'batch_stats': state['batch_stats']},
                   epoch, f'{which} checkpoint of {workdir} (step {meta["step"]}, epoch {epoch})',
                   meta.get('stream_epochs'))
  if not checkpoint_path:
    raise ValueError('give --workdir (a training run) or --checkpoint (a .pth.tar or converted dir)')
  if os.path.isdir(checkpoint_path):
    saved, variables = checkpoint.load_variables(checkpoint_path, which)
    info = checkpoint.load_info(checkpoint_path, which)
    return Weights(config or saved, variables, info['trained_epoch'], f'checkpoint {checkpoint_path}',
                   info.get('stream_epochs'))
  if config is None:
    raise ValueError(f'--checkpoint {checkpoint_path} is a PyTorch file: give --config for its dataset')
  from rgbd_jax.convert import umdr_import  # pylint: disable=g-import-not-at-top
  # the journal fusion's own file brings its streams from model.rgb_checkpoint / depth_checkpoint
  config, variables, info = umdr_import.load_checkpoint(checkpoint_path, config)
  return Weights(config, variables, info['trained_epoch'], f'PyTorch checkpoint {checkpoint_path}',
                 info.get('stream_epochs'))


def run(*, workdir: str = '', checkpoint_path: str = '', which: str = 'best',
        config: ml_collections.ConfigDict | None = None, epoch: int | None = None,
        save_output: bool = False, output: str = '', views: str | None = None,
        vis_dir: str = '', vis_count: int = 8, labels: str = '') -> dict[str, Any]:
  """Evaluates a checkpoint on the validation split; returns the metrics.

  `epoch` (for the sharpness temperature; the epoch convention of
  rgbd_jax.checkpoint) defaults to the epoch that trained the weights, as the
  original's `--eval_only` does. Without sharpness the temperature is 1 and no
  epoch is needed. `views` ('CxS') adds the multi-view pass (`evaluate_views`);
  for odd C and S the single-view results are its middle view's (no second pass).
  `vis_dir` receives pictures (`rgbd_jax.train.visualize`) of the `vis_count`
  videos whose true class got the lowest probability, class names from
  `labels` (a file) or the dataset's list.
  """
  parallel.initialize_from_env()
  checkpoint.quiet_orbax_logs()
  config, variables, saved_epoch, what, stream_epochs = source_variables(workdir, checkpoint_path, which, config)
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
  parsed = None if views is None else views_lib.parse(views)
  multiview = single = None
  if parsed is not None:
    view_results, multiview, single = evaluate_views(
        config, variables, mesh, jit_named_logits_step(config, stream_epochs), temp, parsed)
  if single is not None:
    # the middle view is the single-view clip: its logits are the single-view pass's
    logging.info('single-view results from the middle view of the %s views (no second pass)', parsed)
    results, arrays = single
  else:
    model = build_model(config, stream_epochs)
    results, arrays = evaluate(config, variables, mesh, steps.jit_eval_step(model, config), temp)
  if parsed is not None:
    results = {**results, **view_results}
    logging.info('single-view top1 %.4f, %s-view top1 %.4f', results['top1'], parsed,
                 results['multiview_top1'])
  if vis_dir and jax.process_index() == 0:
    from rgbd_jax.train import visualize  # pylint: disable=g-import-not-at-top  # matplotlib only when asked
    written = visualize.worst_videos(config, variables, arrays, temp, vis_dir, count=vis_count, labels=labels,
                                     stream_epochs=stream_epochs)
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
