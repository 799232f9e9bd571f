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

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import on_device
from rgbd_jax.models.ops import compile as compile_options
from rgbd_jax.models import build
from rgbd_jax.models import losses as losses_lib
from rgbd_jax.train import mixing
from rgbd_jax.train.state import TrainState


def hparams(temp: float, distill_weight: float, lr_scale: float = 1.0) -> dict[str, Any]:
  """The per-epoch scalars, as arrays of JAX's default float (float64 under x64, as the original's Python floats)."""
  as_array = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))
  return {'temp': as_array(temp), 'distill_weight': as_array(distill_weight), 'lr_scale': as_array(lr_scale)}


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
  """Dropout and in-model frame sampling keys of one step: fold_in(rng, step).

  The keys depend on the step only, not on the device count or process.
  """
  k_drop, k_frames = jax.random.split(jax.random.fold_in(rng, step))
  return {'dropout': k_drop, 'frames': k_frames}


MIXING_STREAM = 0x6D6978  # 'mix'


def mixing_rng(rng: jax.Array, step: jax.Array) -> jax.Array:
  """The step's Mixup / ShuffleMix+ key: folded apart from `step_rngs`, so mixing changes no dropout or frame draw."""
  return jax.random.fold_in(jax.random.fold_in(rng, step), MIXING_STREAM)


def global_norm(tree: Any) -> jax.Array:
  """L2 norm of all leaves, over the same concatenation optax.flatten makes (XLA shares it)."""
  return jnp.linalg.norm(jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)]))


def forward_train(model, config, params, batch_stats, batch, hp, rngs, *, preprocess: bool = True,
                  mix_rng: jax.Array | None = None):
  """Training-mode forward pass and losses; returns (total, (out, losses, new batch_stats)).

  `batch` is the loader's: uint8 clips (B, T, S, S, 3) under the clip keys, normalised here to the
  compute dtype with their FRP heatmaps (float32) added (`on_device.model_inputs`).
  `preprocess=False` takes the model's inputs as they are instead (the float NTHWC clips and
  heatmaps of the interchange format: `tools/step_check.py`).
  With `mix_rng` and mixing configured (`mixing.enabled`), the model's inputs are mixed by one
  draw from it and the losses are those of the mixed targets; a network with `input_losses`
  (UMDRFusion) mixes each input with a draw of its own and trains each input's loss terms on its
  own mixed targets, as train_fusion.py.
  """
  if preprocess:
    keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
    batch = on_device.model_inputs(batch, keys, w=int(config.model.w), dtype=build.compute_dtype(config))
  kind = build.network(config)
  inputs = [batch[k] for k in kind.input_keys]
  mixes = None
  if mix_rng is not None and mixing.enabled(config):
    if kind.input_losses is None:  # one draw for the batch: every input mixed alike, one target
      mixes = [mixing.draw(config, mix_rng, inputs[0].shape)] * len(inputs)
    else:                          # each input its own draw and targets (train_fusion.py)
      mixes = [mixing.draw(config, k, x.shape) for k, x in zip(jax.random.split(mix_rng, len(inputs)), inputs)]
    inputs = [mixing.blend(x, mix) for x, mix in zip(inputs, mixes)]
  out, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, *inputs,
                             train=True, temp=hp['temp'], rngs=rngs, mutable=['batch_stats'])
  loss_fn = lambda labels: kind.losses(config, out, labels, hp['distill_weight'])
  if mixes is None:
    losses = loss_fn(batch['label'])
  elif kind.input_losses is None:
    losses = mixing.mixed_losses(loss_fn, batch['label'], mixes[0].lam)
  else:
    losses = mixing.mixed_input_losses(lambda labels: kind.input_losses(config, out, labels), batch['label'],
                                       [mix.lam for mix in mixes])
  return losses['total'], (out, losses, mutated.get('batch_stats', batch_stats))


def train_step(state: TrainState, batch: dict[str, jax.Array], hp: dict[str, Any], *,
               model, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
               schedule) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step; returns the new state and this step's metrics."""
  rngs = step_rngs(state.rng, state.step)
  grad_fn = jax.grad(functools.partial(forward_train, model, config, mix_rng=mixing_rng(state.rng, state.step)),
                     has_aux=True)
  grads, (out, losses, batch_stats) = grad_fn(state.params, state.batch_stats, batch, hp, rngs)
  grad_norm = global_norm(grads)  # before clipping
  updates, opt_state = tx.update(grads, state.opt_state, state.params, lr_scale=hp['lr_scale'])
  params = optax.apply_updates(state.params, updates)
  labels = batch['label']
  correct = jnp.sum(jnp.argmax(out[build.network(config).headline], -1) == labels)
  metrics = {'loss': losses['total'], 'grad_norm': grad_norm,
             'lr': schedule(state.step) * hp['lr_scale'],
             'train_top1': correct / labels.shape[0]}
  metrics.update({f'{k}_loss': v for k, v in losses.items() if k != 'total'})
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], hp: dict[str, Any], *,
              model, config: ml_collections.ConfigDict, preprocess: bool = True) -> dict[str, jax.Array]:
  """Evaluation-mode forward pass; (sum, count) metrics exact under padding.

  `batch` is the loader's (uint8 clips, 'label', 'mask', 'index'), preprocessed on the device as
  in `forward_train` (`preprocess=False`: the model's float inputs as they are).
  Returns per-example headline logits and predictions too (for the confusion
  matrix and `--save_output`).
  """
  if preprocess:
    keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
    batch = on_device.model_inputs(batch, keys, w=int(config.model.w), dtype=build.compute_dtype(config))
  kind = build.network(config)
  out = model.apply(variables, *[batch[k] for k in kind.input_keys], train=False, temp=hp['temp'])
  labels, mask = batch['label'], batch['mask']
  weight = mask.astype(jnp.float32)
  sums = {name: jnp.sum((jnp.argmax(logits, -1) == labels) * weight)
          for name, logits in kind.named_logits(out).items()}
  logits = out[kind.headline]
  ce = losses_lib.label_smoothing_ce(logits, labels, eps=configs.label_smoothing(config), mask=mask)
  sums['ce_loss'] = ce * jnp.sum(weight)
  extra = {k: batch[k] for k in ('label', 'mask', 'index') if k in batch}
  return {'sums': sums, 'count': jnp.sum(weight), 'logits': logits,
          'pred': jnp.argmax(logits, -1), **extra}


def jit_train_step(model, config: ml_collections.ConfigDict, tx: optax.GradientTransformation, schedule):
  """The jitted training step `train.py` runs: (state, batch, hparams) -> (state, metrics), state donated."""
  return jax.jit(functools.partial(train_step, model=model, config=config, tx=tx, schedule=schedule),
                 donate_argnums=(0,),
                 compiler_options=compile_options.compiler_options(int(config.common.xla_opt_level)))


def jit_eval_step(model, config: ml_collections.ConfigDict):
  """The jitted evaluation step: (variables, batch, hparams) -> per-batch sums and predictions."""
  return jax.jit(functools.partial(eval_step, model=model, config=config),
                 compiler_options=compile_options.compiler_options(int(config.common.xla_opt_level)))
