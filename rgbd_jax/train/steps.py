"""The training and evaluation steps (pure functions, jitted by the loop).

Both take the batch as global arrays sharded on the mesh's 'data' axis and the
state replicated; XLA inserts the gradient all-reduce and computes BatchNorm
statistics over the global batch (the original's SyncBN). Per-epoch values
(sharpness temperature, distillation weight, plateau lr scale) come in as
traced scalars in `hparams`, so they never cause a recompile.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from rgbd_jax.train import losses as losses_lib
from rgbd_jax.train.state import TrainState, input_keys


def hparams(temp: float, distill_weight: float, lr_scale: float = 1.0) -> dict[str, Any]:
  return {'temp': jnp.float32(temp), 'distill_weight': jnp.float32(distill_weight),
          'lr_scale': jnp.float32(lr_scale)}


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
  """Dropout and in-model frame sampling keys of one step: fold_in(rng, step).

  The keys depend on the step only, not on the device count or process.
  """
  k_drop, k_frames = jax.random.split(jax.random.fold_in(rng, step))
  return {'dropout': k_drop, 'frames': k_frames}


def compute_losses(config: ml_collections.ConfigDict, out: dict[str, Any], labels: jax.Array,
                   distill_weight: Any) -> dict[str, jax.Array]:
  """The original's training objective for the configured network."""
  eps = float(config.common.label_smoothing)
  if config.model.Network == 'FusionNet':
    # tools/fusion.py adds both streams' distillation with weight 1 from the first epoch.
    return losses_lib.fusion_losses(out, labels, eps=eps, distill_weight=1.0,
                                    mse_weight=float(config.common.mse_weight))
  lamdb = ([float(x) for x in config.common.loss_lamdb] if config.common.MultiLoss
           else [1.0, 0.0, 0.0, 0.0])
  return losses_lib.dsn_losses(out, labels, loss_lamdb=lamdb, distill_weight=distill_weight,
                               eps=eps)


def named_logits(config: ml_collections.ConfigDict, out: dict[str, Any]) -> dict[str, jax.Array]:
  """Logits each reported accuracy is taken from; 'top1' (the headline) first."""
  if config.model.Network == 'FusionNet':
    r, d, f = out['logits_rgb'], out['logits_depth'], out['fusion_logits']
    return {'top1': f, 'top1_rgb': r, 'top1_depth': d, 'top1_rgb+depth': r + d,
            'top1_all': r + d + f}
  xs, xm, xl = out['xs'], out['xm'], out['xl']
  return {'top1': out['logits'], 'top1_xs': xs, 'top1_xm': xm, 'top1_xl': xl,
          'top1_xs+xm': xs + xm, 'top1_xs+xl': xs + xl, 'top1_xm+xl': xm + xl}


def headline_logits(config: ml_collections.ConfigDict, out: dict[str, Any]) -> jax.Array:
  return out['fusion_logits'] if config.model.Network == 'FusionNet' else out['logits']


def global_norm(tree: Any) -> jax.Array:
  """L2 norm of all leaves, over the same concatenation optax.flatten makes (XLA shares it)."""
  return jnp.linalg.norm(jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)]))


def forward_train(model, config, params, batch_stats, batch, hp, rngs):
  """Training-mode forward pass and losses; returns (total, (out, losses, new batch_stats))."""
  inputs = [batch[k] for k in input_keys(config)]
  out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, *inputs,
                             train=True, temp=hp['temp'], rngs=rngs, mutable=['batch_stats'])
  losses = compute_losses(config, out, batch['label'], hp['distill_weight'])
  return losses['total'], (out, losses, mutated.get('batch_stats', batch_stats))


def train_step(state: TrainState, batch: dict[str, jax.Array], hp: dict[str, Any], *,
               model, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
               schedule) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step; returns the new state and this step's metrics."""
  rngs = step_rngs(state.rng, state.step)
  grad_fn = jax.grad(functools.partial(forward_train, model, config), has_aux=True)
  grads, (out, losses, batch_stats) = grad_fn(state.params, state.batch_stats, batch, hp, rngs)
  grad_norm = global_norm(grads)  # before clipping
  updates, opt_state = tx.update(grads, state.opt_state, state.params, lr_scale=hp['lr_scale'])
  params = optax.apply_updates(state.params, updates)
  labels = batch['label']
  correct = jnp.sum(jnp.argmax(headline_logits(config, out), -1) == labels)
  metrics = {'loss': losses['total'], 'grad_norm': grad_norm,
             'lr': schedule(state.step) * hp['lr_scale'],
             'train_top1': correct / labels.shape[0]}
  metrics.update({f'{k}_loss': v for k, v in losses.items() if k != 'total'})
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], hp: dict[str, Any], *,
              model, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Evaluation-mode forward pass; (sum, count) metrics exact under padding.

  Returns per-example headline logits and predictions too (for the confusion
  matrix and `--save_output`).
  """
  inputs = [batch[k] for k in input_keys(config)]
  out = model.apply(variables, *inputs, train=False, temp=hp['temp'])
  labels, mask = batch['label'], batch['mask']
  weight = mask.astype(jnp.float32)
  sums = {name: jnp.sum((jnp.argmax(logits, -1) == labels) * weight)
          for name, logits in named_logits(config, out).items()}
  ce = losses_lib.label_smoothing_ce(headline_logits(config, out), labels,
                                     eps=float(config.common.label_smoothing), mask=mask)
  sums['ce_loss'] = ce * jnp.sum(weight)
  logits = headline_logits(config, out)
  extra = {k: batch[k] for k in ('label', 'mask', 'index') if k in batch}
  return {'sums': sums, 'count': jnp.sum(weight), 'logits': logits,
          'pred': jnp.argmax(logits, -1), **extra}
