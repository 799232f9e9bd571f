"""train_and_evaluate(config, workdir): the original's training procedure, data-parallel.

Stages: devices and mesh -> input -> model and initial weights -> sharded
state -> resume -> jitted steps -> epochs (train, evaluate, checkpoint, plot).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from rgbd_jax import configs
from rgbd_jax import parallel
from rgbd_jax.data import pipeline
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax import checkpoint
from rgbd_jax.train import evaluation
from rgbd_jax.train import metrics as metrics_lib
from rgbd_jax.train import optim
from rgbd_jax.train import pretrained
from rgbd_jax.train import report
from rgbd_jax.train import state as state_lib
from rgbd_jax.train import steps


def _prepare_data(config: ml_collections.ConfigDict) -> None:
  """Generates the synthetic dataset on first use (safe from several processes at once)."""
  if config.common.dataset == 'Synthetic':
    from rgbd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    synthetic.ensure_dataset(config, progress=jax.process_index() == 0)


def _log_config(config, mesh, global_batch, spe):
  logging.info('network %s, %d classes, dtype %s; %d process(es), %d device(s) (%s); '
               'batch %d per device = %d global; %d steps/epoch, %d epochs',
               config.model.Network, configs.num_classes(config), config.model.dtype,
               jax.process_count(), mesh.devices.size, jax.devices()[0].platform,
               config.common.batch_size, global_batch, spe, config.common.epochs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains with evaluation after every epoch; resumes from `workdir` if it holds a checkpoint.

  Returns a summary: best top-1, its epoch, the last evaluation, steps done.
  """
  parallel.initialize_from_env()
  checkpoint.quiet_orbax_logs()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  c = config.common
  _prepare_data(config)

  # ------------------------------------------------------------ mesh, input
  mesh = parallel.make_mesh()
  global_batch = parallel.global_batch_size(c.batch_size, mesh)
  spe = pipeline.steps_per_epoch(config, 'train', global_batch)
  _log_config(config, mesh, global_batch, spe)
  train_iter = evaluation.loader(config, 'train', global_batch, shuffle=True)
  train_keys = evaluation.batch_keys(config, train=True)

  # ------------------------------------------------------- model and state
  model = build_model(config)
  tx, schedule = optim.make_optimizer(config, spe)
  ckpts = checkpoint.TrainCheckpoints(workdir, keep=int(c.keep_checkpoints), create=True)
  resuming = ckpts.latest_step() is not None
  rng = jax.random.PRNGKey(int(c.seed))
  on_variables = None if resuming else functools.partial(pretrained.initial_variables, config)
  state = state_lib.create_train_state(model, config, tx, mesh, rng, on_variables=on_variables)
  logging.info('parameters: %.2fM', state_lib.num_params(state.params) / 1e6)

  plateau = (optim.ReduceLROnPlateau(float(c.learning_rate), int(c.scheduler.patience))
             if c.scheduler.name == 'ReduceLR' else None)
  best = {'top1': -1.0, 'epoch': -1}
  if resuming:
    state, meta = ckpts.restore('latest', state_lib.abstract_state(state), train_iter)
    best = meta['best']
    if plateau is not None:
      plateau.state = meta['plateau']
    logging.info('resumed %s at step %d (epoch %d, step %d of it); best top1 so far %.4f (epoch %d)',
                 ckpts.root / 'latest', int(state.step), int(state.step) // spe,
                 int(state.step) % spe, best['top1'], best['epoch'])
  else:
    logging.info('no checkpoint in %s: starting from step 0', workdir)
  checkpoint.write_config(workdir, config)

  train_fn = steps.jit_train_step(model, config, tx, schedule)
  eval_fn = steps.jit_eval_step(model, config)

  # ------------------------------------------------------------------ loop
  start = int(state.step)
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start if resuming else None)
  total = int(c.epochs) * spe
  stop_at = total if c.max_steps < 0 else min(total, int(c.max_steps))
  averager = metrics_lib.TrainAverager()
  last_eval: dict[str, Any] = {}
  lead = jax.process_index() == 0
  bar = tqdm.tqdm(total=stop_at, initial=start, desc='train', unit='step', dynamic_ncols=True,
                  disable=not lead)

  def meta(epoch):
    # `epoch`: the next epoch to train; `trained_epoch`: the epoch of the last step taken (its
    # sharpness temperature is the one to evaluate these weights with).
    return {'epoch': epoch, 'trained_epoch': (step - 1) // spe, 'best': best,
            'plateau': plateau.state if plateau else None, 'steps_per_epoch': spe}

  def lr_scale():
    return plateau.state['lr'] / float(c.learning_rate) if plateau else 1.0

  step = start
  tick, tick_step = time.time(), step
  while step < stop_at:
    epoch = step // spe
    temp = sharpness_temperature(config, epoch)
    hp = steps.hparams(temp, optim.distill_weight(config, epoch),
                       lr_scale() if epoch >= c.scheduler.warm_up_epochs else 1.0)
    epoch_end = min((epoch + 1) * spe, stop_at)
    epoch_train = metrics_lib.TrainAverager()
    while step < epoch_end:
      batch = next(train_iter)
      state, m = train_fn(state, parallel.shard_batch({k: batch[k] for k in train_keys}, mesh), hp)
      step += 1
      bar.update(1)
      if step % int(c.report_freq) == 0 or step == epoch_end:
        m = jax.device_get(m)
        averager.add(m)
        epoch_train.add(m)
        means = averager.means()
        elapsed = time.time() - tick
        record = {'step': step, 'epoch': epoch, **means,
                  'clips_per_s': (step - tick_step) * global_batch / max(elapsed, 1e-9)}
        writer.write(record)
        bar.set_postfix(epoch=epoch, loss=f'{means["loss"]:.4f}', lr=f'{means["lr"]:.2e}')
        averager.reset()
        tick, tick_step = time.time(), step

    if step == (epoch + 1) * spe:   # a complete epoch: evaluate it
      results, arrays = evaluation.evaluate(config, state.variables, mesh, eval_fn, temp)
      is_best = results['top1'] > best['top1']
      if is_best:
        best = {'top1': results['top1'], 'epoch': epoch}
      if plateau is not None and epoch >= c.scheduler.warm_up_epochs:
        plateau.step(results['top1'])
      last_eval = {'step': step, 'epoch': epoch, 'eval': True, **results,
                   'train_top1': epoch_train.means().get('train_top1', float('nan')),
                   'best_top1': best['top1']}
      writer.write(last_eval)
      bar.write(f'epoch {epoch}: top1 {results["top1"]:.4f} (best {best["top1"]:.4f} at epoch '
                f'{best["epoch"]}); ' + ', '.join(
                    f'{k} {v:.4f}' for k, v in results.items() if k.startswith('top1_')))
      ckpts.save('latest', step, state, train_iter, meta(epoch + 1))
      if is_best:
        ckpts.save('best', step, state, train_iter, meta(epoch + 1))
        if lead:
          report.plot_confusion_matrix(
              os.path.join(workdir, report.CONFUSION_FILE), arrays['labels'], arrays['preds'],
              configs.num_classes(config), f'epoch {epoch}: top-1 {results["top1"]:.4f}')
      if lead:
        report.plot_learning_curves(workdir)
      tick, tick_step = time.time(), step  # clips/s of training only
    elif step == stop_at:           # max_steps inside an epoch
      ckpts.save('latest', step, state, train_iter, meta(epoch))

  bar.close()
  if step < total:
    logging.info('stopped at max_steps=%d (step %d of %d); checkpoint saved', c.max_steps, step, total)
  if lead and os.path.exists(os.path.join(workdir, metrics_lib.METRICS_FILE)):
    report.plot_learning_curves(workdir)
  ckpts.close()
  summary = {'best_top1': best['top1'], 'best_epoch': best['epoch'], 'steps': step,
             'last_eval': last_eval}
  logging.info('done: %s', summary)
  return summary
