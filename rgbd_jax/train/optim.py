"""The original's optimisers and learning-rate schedules, in optax.

torch's SGD step, which the original uses (tools/train.py):

    clip_grad_norm_(params, grad_clip)      # g *= min(1, clip / (||g|| + 1e-6)), on .grad
    d = g + weight_decay * p                # weight decay added to the gradient, every parameter
    buf = d (first step) | momentum * buf + d
    p -= lr * buf

so the chain is clip -> add_decayed_weights -> trace (optax's trace starts from
a zero buffer, which gives buf = d on the first step, as torch) -> -lr.
The learning rate is a per-step schedule (linear warm-up from 1e-8, then
cosine to `learning_rate_min`); for `scheduler.name == 'ReduceLR'` the rate
after warm-up is held by a host-side `ReduceLROnPlateau` and enters the step
as a scale factor (`tx.update(..., lr_scale=...)`), so the jitted step never
recompiles.

The journal (UMDR) builds both with timm 0.6 instead (`common.opt`, `common.sched`):
`create_optimizer` with `--opt sgd` is torch's SGD with `nesterov=True` over two
parameter groups, weight decay 0 for every parameter with at most one dimension or
a name ending in `.bias` (norm scales, biases), `weight_decay` for the rest
(`no_weight_decay_mask`); the step is then d = g (+ wd * p), buf = momentum * buf + d,
p -= lr * (d + momentum * buf), which is optax's trace with nesterov=True.
`create_scheduler` gives one rate per epoch (`timm_epoch_rates`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rgbd_jax.models import build

WARMUP_START_LR = 1e-8  # the original's warm-up starts at 1e-8


class TorchClipState(NamedTuple):
  pass


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6))."""

  def init_fn(params):
    del params
    return TorchClipState()

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    coef = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    updates = jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


TIMM_SCHEDULES = ('cosine', 'step')


def timm_epoch_rates(config: ml_collections.ConfigDict) -> np.ndarray:
  """The learning rate each epoch trains at under the journal's timm scheduler (`common.sched`), float64.

  timm's rate for index t: warm-up `warmup_lr + t * (lr - warmup_lr) / warmup_epochs` while
  t < `warmup_epochs`; then 'cosine' (one cycle of `epochs`, t not shifted by the warm-up):
  `min_lr + (lr - min_lr) * (1 + cos(pi * t / epochs)) / 2`, or 'step':
  `lr * decay_rate ** (t // decay_epochs)`. The journal's train.py sets the warm-up start at
  construction and calls `scheduler.step(epoch)` after each epoch, so epoch e trains at
  index max(e - 1, 0): epochs 0 and 1 both at `warmup_lr`.
  """
  c = config.common
  if c.sched not in TIMM_SCHEDULES:
    raise ValueError(f"common.sched must be '' (common.scheduler) or one of {TIMM_SCHEDULES}, got {c.sched!r}")
  base, start, warm = float(c.learning_rate), float(c.warmup_lr), int(c.warmup_epochs)
  epochs = int(c.epochs)
  if epochs < 1:
    raise ValueError(f'common.epochs must be >= 1, got {epochs}')

  def rate(t: int) -> float:
    if t < warm:
      return start + t * ((base - start) / warm)
    if c.sched == 'cosine':
      low = float(c.learning_rate_min)
      return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t / epochs)) if t < epochs else low
    return base * (float(c.decay_rate) ** (t // float(c.decay_epochs)))

  return np.array([rate(max(e - 1, 0)) for e in range(epochs)], np.float64)


def _per_epoch_schedule(rates: np.ndarray, steps_per_epoch: int) -> Callable[[Any], Any]:
  table = jnp.asarray(rates, dtype=jnp.result_type(float))  # float64 under x64, as the original's Python floats

  def schedule(count):
    epoch = jnp.minimum(jnp.asarray(count) // steps_per_epoch, len(rates) - 1)
    return table[epoch]
  return schedule


def uses_plateau(config: ml_collections.ConfigDict) -> bool:
  """Whether the loop holds a ReduceLROnPlateau (the conference's schedule for IsoGD)."""
  return not config.common.sched and config.common.scheduler.name == 'ReduceLR'


def no_weight_decay_mask(params: Any) -> Any:
  """True where timm's `param_groups_weight_decay` decays: more than one dimension and not a bias.

  Our leaves have the original's number of dimensions (Dense and conv kernels, cls tokens and
  position embeddings as torch has them), and the biases are the leaves named 'bias'.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and getattr(path[-1], 'key', None) != 'bias', params)


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> Callable[[Any], Any]:
  """Learning rate per optimiser step (count starts at 0).

  With `common.sched` set: the journal's timm rate of the step's epoch (`timm_epoch_rates`).

  Linear warm-up from 1e-8 to `learning_rate` over `warm_up_epochs` epochs,
  then, for the 'cosin' scheduler, cosine annealing to `learning_rate_min` at
  the end of `epochs`; for 'ReduceLR' the rate stays at `learning_rate` (and
  `ReduceLROnPlateau` scales it from outside).
  """
  c = config.common
  if steps_per_epoch < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}')
  if c.sched:
    return _per_epoch_schedule(timm_epoch_rates(config), steps_per_epoch)
  name = c.scheduler.name
  if name not in ('cosin', 'ReduceLR'):
    raise ValueError(f"common.scheduler.name must be 'cosin' or 'ReduceLR', got {name!r}")
  base = float(c.learning_rate)
  warm = int(c.scheduler.warm_up_epochs) * steps_per_epoch
  total = max(int(c.epochs) * steps_per_epoch, warm + 1)
  if name == 'cosin':
    after = optax.cosine_decay_schedule(
        init_value=base, decay_steps=total - warm, alpha=float(c.learning_rate_min) / base)
  else:
    after = optax.constant_schedule(base)
  if warm == 0:
    return after
  warmup = optax.linear_schedule(WARMUP_START_LR, base, warm)
  return optax.join_schedules([warmup, after], [warm])


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   learning_rate: float | None = None
                   ) -> tuple[optax.GradientTransformation, Callable[[Any], Any]]:
  """(optax transformation, lr schedule) for config.common.optim.

  The transformation ends with `scale_by_schedule(-lr)`; callers may multiply
  its updates by a plateau scale (see module docstring). `learning_rate`
  replaces the schedule by a constant (single-step checks).

  With `common.accumulation_steps` k > 1 the transformation accumulates k
  gradients (their mean) and updates once every k steps: an effective batch
  of k x the global batch. BatchNorm is not accumulated: each micro-batch is
  normalised with its own statistics (over the global micro-batch, as
  SyncBN over the devices) and moves the running statistics once, as k
  smaller batches would in the original.
  """
  c = config.common
  k = int(c.accumulation_steps)
  if k < 1:
    raise ValueError(f'common.accumulation_steps must be >= 1, got {k}')
  # the schedule runs over optimiser updates: one per `k` training steps (micro-batches)
  schedule = (learning_rate_schedule(config, max(1, steps_per_epoch // k)) if learning_rate is None
              else optax.constant_schedule(float(learning_rate)))
  clip = float(config.model.grad_clip)
  parts = [clip_by_global_norm_torch(clip)] if clip > 0 else []
  if c.opt:
    tx = _timm_sgd(config, parts, schedule)
  else:
    tx = _torch_optimizer(config, parts, schedule)
  frozen = build.network(config).frozen
  if frozen:
    # streams the original never trains: their updates (weight decay included) are zero
    mask = lambda params: {k: any(k.startswith(p) for p in frozen) for k in params}
    tx = optax.chain(tx, optax.masked(optax.set_to_zero(), mask))
  if k == 1:
    return tx, schedule
  # Gradient accumulation: the mean gradient of k micro-batches, one update every k steps (the
  # state's step counts micro-batches; the lr of micro-step s is that of update s // k).
  return optax.MultiSteps(tx, every_k_schedule=k), lambda step: schedule(step // k)


def _timm_sgd(config, clip: list, schedule) -> optax.GradientTransformation:
  """timm's `--opt sgd`: the decay on the tree (it needs each leaf's shape), the momentum on one flat vector."""
  c = config.common
  if c.opt != 'sgd':
    raise ValueError(f"common.opt must be '' (common.optim) or 'sgd' (the journal's timm SGD), got {c.opt!r}")
  return optax.chain(
      *clip,
      optax.add_decayed_weights(float(c.weight_decay), mask=no_weight_decay_mask),
      optax.flatten(optax.chain(optax.trace(decay=float(c.momentum), nesterov=True),
                                optax.scale_by_schedule(lambda count: -schedule(count)))),
      scale_by_lr_scale())


def _torch_optimizer(config, parts: list, schedule) -> optax.GradientTransformation:
  """The conference's torch optimisers (`common.optim`), as tools/train.py builds them."""
  c = config.common
  if c.optim == 'SGD':
    parts += [optax.add_decayed_weights(float(c.weight_decay)),
              optax.trace(decay=float(c.momentum), nesterov=False)]
  elif c.optim == 'Adam':
    # torch.optim.Adam as the original builds it: no weight decay.
    parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)]
  elif c.optim == 'AdamW':
    # torch.optim.AdamW as the original builds it: decoupled weight decay 0.01
    # (p -= lr * wd * p), which equals adding wd * p to the update before -lr.
    parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
              optax.add_decayed_weights(0.01)]
  else:
    raise ValueError(f"common.optim must be 'SGD', 'Adam' or 'AdamW', got {c.optim!r}")
  parts.append(optax.scale_by_schedule(lambda count: -schedule(count)))
  parts.append(scale_by_lr_scale())
  # One flat vector instead of a few hundred leaves: the same arithmetic, but the training
  # step's program (and its compile time) shrinks by about a third.
  return optax.flatten(optax.chain(*parts))


def scale_by_lr_scale() -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates by the `lr_scale` passed to `update` (ReduceLROnPlateau's factor).

  torch applies its lr when it moves the parameters (p -= lr * buf), so scaling
  the final update is the same as changing the lr.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, lr_scale=1.0, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: (u * lr_scale).astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ReduceLROnPlateau:
  """torch.optim.lr_scheduler.ReduceLROnPlateau as the original configures it.

  mode 'max' (validation accuracy), factor 0.1, `patience`, threshold 1e-4
  relative, cooldown 3, min_lr 1e-5, stepped once per epoch after warm-up.
  The state is a small dict so it goes into checkpoints.
  """

  def __init__(self, lr: float, patience: int, factor: float = 0.1, threshold: float = 1e-4,
               cooldown: int = 3, min_lr: float = 1e-5, eps: float = 1e-8):
    self.factor, self.patience, self.threshold = factor, patience, threshold
    self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
    self.state = {'lr': float(lr), 'best': -math.inf, 'num_bad_epochs': 0, 'cooldown_counter': 0}

  def step(self, metric: float) -> float:
    s = self.state
    if metric > s['best'] * (1.0 + self.threshold):
      s['best'], s['num_bad_epochs'] = float(metric), 0
    else:
      s['num_bad_epochs'] += 1
    if s['cooldown_counter'] > 0:
      s['cooldown_counter'] -= 1
      s['num_bad_epochs'] = 0
    if s['num_bad_epochs'] > self.patience:
      new_lr = max(s['lr'] * self.factor, self.min_lr)
      if s['lr'] - new_lr > self.eps:
        s['lr'] = new_lr
      s['cooldown_counter'] = self.cooldown
      s['num_bad_epochs'] = 0
    return s['lr']


def distill_weight(config: ml_collections.ConfigDict, epoch: int) -> float:
  """Weight of the distillation loss at `epoch` (0-based), as tools/train.py sets it.

  The original switches it from its initial value 0 to `distill` in the first
  epoch that is not a warm-up epoch by its own test `epoch < warm_up_epochs - 1`,
  i.e. from epoch `warm_up_epochs - 1` on.
  """
  kind = build.network(config)
  if kind.distill_weight is not None:  # the journal networks' own rule
    return float(kind.distill_weight(config, epoch))
  if epoch < int(config.common.scheduler.warm_up_epochs) - 1:
    return 0.0
  return float(config.common.distill)
