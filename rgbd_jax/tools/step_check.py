"""One training step of the original's recipe, reported under the original's names.

The cross-framework check of training (`crosscheck.py --train-step`): from
given weights and one batch, the step tools/train.py takes, with dropout off
and the DTN's frames at the segment centres (the deterministic rule the golden
fixtures use), so that a PyTorch run of the same step can be compared tensor by
tensor: losses, logits, the gradient (norms of all, values of some), the
parameters after one optimiser step, and every BatchNorm's running statistics
after the step.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rgbd_jax.models.ops import compile as compile_options
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_layout
from rgbd_jax.models import build
from rgbd_jax.models.build import build_model, sharpness_temperature
from rgbd_jax.train import optim
from rgbd_jax.train import steps


def deterministic_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config with every dropout at 0 and centre frame sampling."""
  config = ml_collections.ConfigDict(config.to_dict())
  m = config.model
  m.dropout = m.rcm_dropout = m.fusion_dropout = m.bce_dropout = 0.0
  m.frame_sampling = 'centre'
  return config


def _state_dict(tree: Mapping[str, Any], config) -> dict[str, np.ndarray]:
  return dict(torch_export.variables_to_state_dict(tree, config, dtype=np.float64))


def train_step_outputs(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                       batch: Mapping[str, Any], *, epoch: int, keys: Sequence[str] = ()
                       ) -> dict[str, np.ndarray]:
  """Runs one training step and names its results like the original's state_dict.

  Args:
    config: the run's config (learning rate, momentum, weight decay, grad_clip,
      loss weights, label smoothing); dropout and frame sampling are overridden.
    variables: {'params', 'batch_stats'} of the network.
    batch: the model inputs in our layout (NTHWC) under the network's input keys (`build.network(config).input_keys`)
      names, and 'label' (B,).
    epoch: sets the sharpness temperature and the distillation weight (0 until
      warm-up ends, as tools/train.py).
    keys: original parameter names whose gradient and updated value are returned.

  Returns:
    total_loss, ce_loss, distillation_loss, logits, grad_global_norm (before
    clipping), grad_norm/<key> for every parameter, grad/<key> and
    sgd_step/<key> for `keys`, bn_after/<prefix>.running_mean|running_var for
    every BatchNorm. Tensors in the original's layout, float64.
  """
  config = deterministic_config(config)
  entries = torch_layout.original_entries(config)
  param_keys = [e.key for e in entries if e.kind not in ('stat', 'count')]
  unknown = [k for k in keys if k not in param_keys]
  if unknown:
    raise ValueError(f'--keys: not parameters of this {config.model.Network} network: {unknown} '
                     f'(e.g. {param_keys[:3]})')
  model = build_model(config)
  tx, _ = optim.make_optimizer(config, steps_per_epoch=1,
                               learning_rate=float(config.common.learning_rate))
  hp = steps.hparams(sharpness_temperature(config, epoch), optim.distill_weight(config, epoch))
  kind = build.network(config)
  names = kind.input_keys
  missing = [k for k in names + ('label',) if k not in batch]
  if missing:
    raise ValueError(f'the batch lacks {missing} (a training step needs the inputs and `target`)')
  inputs = {k: jnp.asarray(batch[k]) for k in names}
  inputs['label'] = jnp.asarray(batch['label'], jnp.int32)

  @functools.partial(jax.jit, compiler_options=compile_options.compiler_options())
  def step(params, batch_stats, inputs):
    # the interchange format's float inputs go to the model as they are (no on-device preprocessing)
    grad_fn = jax.grad(functools.partial(steps.forward_train, model, config, preprocess=False), has_aux=True)
    rngs = steps.step_rngs(jax.random.PRNGKey(0), 0)  # unused: no dropout, centre frames
    grads, (out, losses, new_stats) = grad_fn(params, batch_stats, inputs, hp, rngs)
    updates, _ = tx.update(grads, tx.init(params), params)
    return {'grads': grads, 'params': optax.apply_updates(params, updates),
            'batch_stats': new_stats, 'losses': losses,
            'logits': out[kind.headline],
            'grad_global_norm': optax.tree.norm(grads)}

  params = variables['params']
  result = jax.device_get(step(params, variables.get('batch_stats', {}), inputs))
  grads = _state_dict({'params': result['grads'], 'batch_stats': result['batch_stats']}, config)
  after = _state_dict({'params': result['params'], 'batch_stats': result['batch_stats']}, config)
  losses = result['losses']
  out = {'total_loss': np.float64(losses['total']), 'ce_loss': np.float64(losses['ce']),
         'distillation_loss': np.float64(losses['distillation']),
         'logits': np.asarray(result['logits'], np.float64),
         'grad_global_norm': np.float64(result['grad_global_norm'])}
  out.update({f'{k}_loss': np.float64(v) for k, v in losses.items()
              if k not in ('total', 'ce', 'distillation')})  # FusionNet: bce, mse
  for k in param_keys:
    out[f'grad_norm/{k}'] = np.float64(np.linalg.norm(grads[k].ravel()))
  for k in keys:
    out[f'grad/{k}'] = grads[k]
    out[f'sgd_step/{k}'] = after[k]
  for e in entries:
    if e.kind == 'stat':
      out[f'bn_after/{e.key}'] = after[e.key]
  return out


def crosscheck_mode(model, variables: Mapping[str, Any], inputs: Mapping[str, Any], *,
                    config: ml_collections.ConfigDict, epoch: int, keys: Sequence[str] = ()
                    ) -> dict[str, np.ndarray]:
  """`crosscheck.py --train-step`: the mode function (NTHWC inputs with `target`)."""
  del model  # rebuilt without dropout and with centre frame sampling
  if 'target' not in inputs:
    raise ValueError('--train-step needs `target` (B,) in the inputs .npz (the step\'s labels)')
  batch = {k: v for k, v in inputs.items() if k != 'target'}
  batch['label'] = inputs['target']
  return train_step_outputs(config, variables, batch, epoch=epoch, keys=keys)
