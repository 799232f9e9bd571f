"""The original's training objectives (tools/train.py, tools/fusion.py, lib/model/fusion_Net.py).

Every loss is computed in float32 at least (a bfloat16 model's logits and
features are upcast first; float64 stays float64).
Every per-example term is averaged over the examples whose `mask` is True,
so a padded evaluation batch gives the loss of its real examples. The
distillation term is the model's own KL sum over the batch (the original's
`reduction='sum'`), taken as is.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp


def _at_least_f32(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _masked_mean(per_example: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(per_example)
  mask = mask.astype(per_example.dtype)
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def label_smoothing_ce(logits: jax.Array, labels: jax.Array, eps: float = 0.1,
                       mask: jax.Array | None = None) -> jax.Array:
  """(1 - eps) * NLL + eps * mean_j(-log p_j), averaged over the batch (the original's LabelSmoothingCrossEntropy)."""
  logp = jax.nn.log_softmax(_at_least_f32(logits), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  smooth = -jnp.mean(logp, axis=-1)
  return _masked_mean((1.0 - eps) * nll + eps * smooth, mask)


def _clamped_log(p: jax.Array) -> jax.Array:
  # torch's BCELoss clamps log at -100; the `where`s keep the gradient finite at p == 0.
  safe = jnp.where(p > 0, p, 1.0)
  return jnp.where(p > 0, jnp.maximum(jnp.log(safe), -100.0), -100.0)


def binary_cross_entropy(probs: jax.Array, target: float, mask: jax.Array | None = None) -> jax.Array:
  """torch.nn.BCELoss (mean) of probabilities `probs` (B,) or (B, 1) against a constant target."""
  probs = _at_least_f32(probs).reshape(probs.shape[0], -1)
  per = -(target * _clamped_log(probs) + (1.0 - target) * _clamped_log(1.0 - probs))
  return _masked_mean(jnp.mean(per, axis=-1), mask)


def mean_squared_error(a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """torch.nn.MSELoss (mean over every element)."""
  per = jnp.mean(jnp.square(_at_least_f32(a) - _at_least_f32(b)).reshape(a.shape[0], -1), axis=-1)
  return _masked_mean(per, mask)


def dsn_losses(out: Mapping[str, jax.Array], labels: jax.Array, *, loss_lamdb: Sequence[float],
               distill_weight: Any, eps: float = 0.1, mask: jax.Array | None = None
               ) -> dict[str, jax.Array]:
  """Unimodal objective: weighted CE on (merged, xs, xm, xl) + distill_weight * distillation.

  Returns total, ce (the weighted sum) and distillation (unweighted KL sum).
  """
  if len(loss_lamdb) != 4:
    raise ValueError(f'loss_lamdb needs 4 weights (merged, xs, xm, xl), got {list(loss_lamdb)}')
  ce = sum(float(w) * label_smoothing_ce(out[k], labels, eps, mask)
           for w, k in zip(loss_lamdb, ('logits', 'xs', 'xm', 'xl')))
  distillation = _at_least_f32(out['distillation_loss']).reshape(())
  return {'total': ce + distill_weight * distillation, 'ce': ce, 'distillation': distillation}


def fusion_losses(out: Mapping[str, jax.Array], labels: jax.Array, *, eps: float = 0.1,
                  distill_weight: Any = 1.0, mse_weight: Any = 1.0, mask: jax.Array | None = None
                  ) -> dict[str, jax.Array]:
  """CrossFusionNet objective: CE + BCE + mse_weight * MSE + distill_weight * distillation.

  ce: label-smoothing CE of the fusion, rgb and depth logits, summed.
  bce: the modality discriminator, rgb features labelled 1 and depth 0.
  mse: the decoder output against both post-interaction features (no stop-gradient, as the original).
  """
  ce = (label_smoothing_ce(out['fusion_logits'], labels, eps, mask)
        + label_smoothing_ce(out['logits_rgb'], labels, eps, mask)
        + label_smoothing_ce(out['logits_depth'], labels, eps, mask))
  bce = (binary_cross_entropy(jax.nn.sigmoid(_at_least_f32(out['bce_logit_rgb'])), 1.0, mask)
         + binary_cross_entropy(jax.nn.sigmoid(_at_least_f32(out['bce_logit_depth'])), 0.0, mask))
  mse = (mean_squared_error(out['de'], out['F_M'], mask)
         + mean_squared_error(out['de'], out['F_K'], mask))
  distillation = _at_least_f32(out['distillation_loss']).reshape(())
  total = ce + bce + mse_weight * mse + distill_weight * distillation
  return {'total': total, 'ce': ce, 'bce': bce, 'mse': mse, 'distillation': distillation}
