"""train_and_evaluate(config, workdir): the original's training procedure, data-parallel.

Stages: lock the workdir -> data and preflight -> mesh and input -> model and
initial weights -> sharded state -> resume (config checked against the
record) -> jitted steps -> epochs (train, evaluate, checkpoint, plot).

Checkpoints: after every epoch's evaluation, every `common.checkpoint_every_steps`
steps (written in the background while training goes on), and at the current
step when SIGTERM/SIGINT asks the run to stop (`signals.py`); a resume from any
of them continues exactly (same losses as an uninterrupted run). A SIGKILL
loses the steps since the last save.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import tqdm

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax import hugepages
from rgbd_jax import parallel
from rgbd_jax.data import pipeline
from rgbd_jax.data import preflight
from rgbd_jax.models import build
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax.train import config_history
from rgbd_jax.train import device_prefetch
from rgbd_jax.train import evaluation
from rgbd_jax.train import metrics as metrics_lib
from rgbd_jax.train import optim
from rgbd_jax.train import pretrained
from rgbd_jax.train import report
from rgbd_jax.train import signals
from rgbd_jax.train import state as state_lib
from rgbd_jax.train import steps
from rgbd_jax.train.workdir_lock import WorkdirLock


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
  line = hugepages.hint(jax.default_backend())
  if line:
    logging.info('%s', line)


def _preflight(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Checks labels and frame files of both splits before the first step; returns skipped videos per phase."""
  summary = preflight.run(config, progress=jax.process_index() == 0)
  skipped = {phase: len(s['bad']) for phase, s in summary.items()}
  logging.info('preflight (%s): %s', config.dataset.verify_frames, ', '.join(
      f'{phase} {s["videos"]} videos, {len(s["bad"])} bad' for phase, s in summary.items()))
  return skipped


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains with evaluation after every epoch; resumes from `workdir` if it holds a checkpoint.

  Returns a summary: best top-1, its epoch, the last evaluation, steps done,
  and `stopped_by` (the signal's name when SIGINT/SIGTERM stopped the run, else '').
  """
  parallel.initialize_from_env()
  checkpoint.quiet_orbax_logs()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with WorkdirLock(workdir, enabled=jax.process_index() == 0) as lock, \
      signals.StopRequest(cleanups=(lock.release,)) as stop:
    return _run(config, workdir, stop)


def _run(config: ml_collections.ConfigDict, workdir: str, stop: signals.StopRequest) -> dict[str, Any]:
  c = config.common
  _prepare_data(config)
  skipped = _preflight(config)

  # ------------------------------------------------------------ mesh, input
  mesh = parallel.make_mesh()
  global_batch = parallel.global_batch_size(c.batch_size, mesh)
  spe = pipeline.steps_per_epoch(config, 'train', global_batch)
  _log_config(config, mesh, global_batch, spe)
  # batches reach the device one step ahead of the step that reads them (checkpoints save the
  # position of the batches taken, not of those prefetched)
  train_iter = device_prefetch.DevicePrefetch(evaluation.loader(config, 'train', global_batch, shuffle=True),
                                              mesh, pipeline.batch_keys(config, train=True))

  # ------------------------------------------------------- model and state
  ckpts = checkpoint.TrainCheckpoints(workdir, keep=int(c.keep_checkpoints), create=True, async_save=True)
  try:
    # UMDRFusion's frozen streams run at their own checkpoints' epochs' temperatures: read from the
    # files on a fresh run, from the run's own record on resume (the files are not needed then)
    resumed_meta = ckpts.read_meta('latest') if ckpts.latest_step() is not None else {}
    epochs_of_streams = (resumed_meta['stream_epochs'] if 'stream_epochs' in resumed_meta
                         else pretrained.stream_epochs(config))
    if epochs_of_streams is not None:
      logging.info('frozen streams trained through epochs %s: their temperatures are those of epochs %s',
                   epochs_of_streams, dict(zip(build.STREAMS, build.stream_epochs(config, epochs_of_streams))))
    model = build_model(config, epochs_of_streams)
    tx, schedule = optim.make_optimizer(config, spe)
    return _train(config, workdir, stop, mesh, global_batch, spe, train_iter, model, tx, schedule, ckpts,
                  skipped, epochs_of_streams)
  finally:
    ckpts.close()
    train_iter.close()


def _train(config, workdir, stop, mesh, global_batch, spe, train_iter, model, tx, schedule, ckpts,
           skipped, epochs_of_streams=None) -> dict[str, Any]:
  c = config.common
  latest = ckpts.latest_step()
  resuming = latest is not None
  # the config against the workdir's record first: a structural change stops here, before any work
  config_history.record(workdir, config, resuming=resuming, step=latest if resuming else 0)
  rng = jax.random.PRNGKey(int(c.seed))
  on_variables = None if resuming else functools.partial(pretrained.initial_variables, config)
  state = state_lib.create_train_state(model, config, tx, mesh, rng, on_variables=on_variables)
  logging.info('parameters: %.2fM', state_lib.num_params(state.params) / 1e6)

  plateau = (optim.ReduceLROnPlateau(float(c.learning_rate), int(c.scheduler.patience))
             if optim.uses_plateau(config) else None)
  best = {'top1': -1.0, 'epoch': -1}
  epoch_sums = {}
  pending_eval = False
  start = 0
  if resuming:
    state, meta = ckpts.restore('latest', state_lib.abstract_state(state), train_iter)
    best = meta['best']
    epoch_sums = meta.get('epoch_train', {}) or {}
    pending_eval = bool(meta.get('pending_eval', False))
    if plateau is not None:
      plateau.state = meta['plateau']
    start = int(state.step)
    logging.info('resumed %s at step %d (epoch %d, step %d of it); best top1 so far %.4f (epoch %d)',
                 ckpts.root / str(start), start, start // spe, start % spe, best['top1'], best['epoch'])
  else:
    logging.info('no checkpoint in %s: starting from step 0', workdir)

  train_fn = steps.jit_train_step(model, config, tx, schedule)
  eval_fn = steps.jit_eval_step(model, config)

  # ------------------------------------------------------------------ loop
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start if resuming else None)
  total = int(c.epochs) * spe
  stop_at = total if c.max_steps < 0 else min(total, int(c.max_steps))
  every = int(c.checkpoint_every_steps)
  last_eval: dict[str, Any] = {}
  lead = jax.process_index() == 0
  step = start
  epoch_train = metrics_lib.TrainAverager.from_state(epoch_sums)

  def meta(epoch_next, pending=False):
    # `epoch`: the next epoch to train; `trained_epoch`: the epoch of the last step taken (the
    # epoch convention of rgbd_jax.checkpoint: its temperature is the one to evaluate with).
    return {'epoch': epoch_next, 'trained_epoch': (step - 1) // spe, 'best': best,
            'plateau': plateau.state if plateau else None, 'steps_per_epoch': spe,
            'epoch_train': epoch_train.state(), 'pending_eval': pending,
            **({} if epochs_of_streams is None else {'stream_epochs': epochs_of_streams})}

  def lr_scale():
    return plateau.state['lr'] / float(c.learning_rate) if plateau else 1.0

  def end_of_epoch(epoch) -> bool:
    """Evaluates the epoch just trained, saves, plots; False when a stop signal cut the evaluation."""
    nonlocal best, last_eval, epoch_train
    temp = sharpness_temperature(config, epoch)
    result = evaluation.evaluate(config, state.variables, mesh, eval_fn, temp,
                                 should_stop=lambda: stop.requested)
    if result is None:
      ckpts.save(step, state, train_iter, meta(epoch + 1, pending=True))
      return False
    results, arrays = result
    is_best = results['top1'] > best['top1']
    if is_best:
      best = {'top1': results['top1'], 'epoch': epoch}
    if plateau is not None and epoch >= c.scheduler.warm_up_epochs:
      plateau.step(results['top1'])
    last_eval = {'step': step, 'epoch': epoch, 'eval': True, **results,
                 'train_top1': epoch_train.means().get('train_top1', float('nan')),
                 'best_top1': best['top1'], 'skipped_videos': skipped}
    writer.write(last_eval)
    bar.write(f'epoch {epoch}: top1 {results["top1"]:.4f} (best {best["top1"]:.4f} at epoch '
              f'{best["epoch"]}); ' + ', '.join(
                  f'{k} {v:.4f}' for k, v in results.items() if k.startswith('top1_')))
    epoch_train = metrics_lib.TrainAverager()
    ckpts.save(step, state, train_iter, meta(epoch + 1), metrics={'top1': float(results['top1'])})
    if is_best and lead:
      report.plot_confusion_matrix(
          os.path.join(workdir, report.CONFUSION_FILE), arrays['labels'], arrays['preds'],
          configs.num_classes(config), f'epoch {epoch}: top-1 {results["top1"]:.4f}')
    if lead:
      report.plot_learning_curves(workdir)
    return True

  bar = tqdm.tqdm(total=stop_at, initial=start, desc='train', unit='step', dynamic_ncols=True,
                  disable=not lead)
  try:
    if pending_eval and not stop.requested:
      logging.info('evaluating epoch %d, whose evaluation a stop signal interrupted', step // spe - 1)
      end_of_epoch(step // spe - 1)
    tick, tick_step = time.time(), step
    while step < stop_at and not stop.requested:
      epoch = step // spe
      hp = steps.hparams(sharpness_temperature(config, epoch), optim.distill_weight(config, epoch),
                         lr_scale() if epoch >= c.scheduler.warm_up_epochs else 1.0)
      epoch_end = min((epoch + 1) * spe, stop_at)
      while step < epoch_end and not stop.requested:
        state, m = train_fn(state, next(train_iter), hp)
        step += 1
        # from the first step on, a signal stops the loop after its step with a checkpoint (before
        # it, through the first step's compilation, there is nothing to save: it exits at once)
        stop.training = True
        bar.update(1)
        if step % int(c.report_freq) == 0 or step == epoch_end:
          m = jax.device_get(m)
          epoch_train.add(m)
          elapsed = time.time() - tick
          means = {k: float(v) for k, v in m.items()}
          writer.write({'step': step, 'epoch': epoch, **means,
                        'clips_per_s': (step - tick_step) * global_batch / max(elapsed, 1e-9)})
          bar.set_postfix(epoch=epoch, loss=f'{means["loss"]:.4f}', lr=f'{means["lr"]:.2e}')
          tick, tick_step = time.time(), step
        if every > 0 and step % every == 0 and step != (epoch + 1) * spe and step != stop_at:
          ckpts.save(step, state, train_iter, meta(epoch))  # in the background
      if stop.requested:
        break
      if step == (epoch + 1) * spe:   # a complete epoch: evaluate it
        if not end_of_epoch(epoch):
          break
        tick, tick_step = time.time(), step  # clips/s of training only
      elif step == stop_at:           # max_steps inside an epoch
        ckpts.save(step, state, train_iter, meta(epoch))
    if stop.requested and step > 0 and ckpts.latest_step() != step:
      at_epoch_end = step % spe == 0 and last_eval.get('step') != step  # its evaluation not done yet
      ckpts.save(step, state, train_iter, meta(step // spe, pending=at_epoch_end))
  finally:
    bar.close()
  ckpts.wait()
  if stop.requested:
    logging.warning('%s: stopped at step %d of %d with a checkpoint; run the same command to resume',
                    stop.name, step, stop_at)
  elif step < total:
    logging.info('stopped at max_steps=%d (step %d of %d); checkpoint saved', c.max_steps, step, total)
  if lead and os.path.exists(os.path.join(workdir, metrics_lib.METRICS_FILE)):
    report.plot_learning_curves(workdir)
  summary = {'best_top1': best['top1'], 'best_epoch': best['epoch'], 'steps': step,
             'last_eval': last_eval, 'stopped_by': stop.name}
  logging.info('done: %s', summary)
  return summary
