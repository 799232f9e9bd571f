"""MixUp, CutMix and ShuffleMix+ inside the training step: the journal's (UMDR) `Mixup`, 'batch' mode.

The journal's train.py mixes each training batch before the forward pass (utils/mixup.py,
utils/shufflemix.py). One draw serves the whole batch; clip i is mixed with clip B-1-i (the
batch reversed) and its target becomes lam * y_i + (1 - lam) * y_{B-1-i}, each label-smoothed:

* with probability `mixup_prob` the batch is mixed at all (else lam = 1, as is a draw of exactly 1);
* CutMix (`cutmix` > 0, or `cutmix_minmax`; with MixUp also on, with probability
  `mixup_switch_prob`): one box, the same on every frame, comes from the paired clip, and lam is
  the share of the frame outside the box;
* otherwise ShuffleMix+: with probability `smprob` ShuffleMix (lam ~ Beta(shufflemix, shufflemix);
  round((1 - lam) * T) frames chosen at random are taken whole from the paired clip), else MixUp
  (lam ~ Beta(mixup, mixup); lam * x + (1 - lam) * paired x).

`sample` draws every variate with the JAX RNG on every step (static shapes, no host round trip);
`decide` applies the original's rules to them; `blend` mixes a clip batch (NTHWC, any channels)
in one elementwise expression. Tests feed the original's own draws through `decide`.

Cross entropy is linear in its target, so the loss of the mixed smoothed targets (the original's
SoftTargetCrossEntropy) is lam * loss(y) + (1 - lam) * loss(y reversed) for every label term of
the objective; terms that read no labels (distillation) are unchanged (`mixed_losses`).

Unlike the original, which mixes each GPU's own batch with its own draw, the pairs and the draw
are the global batch's, so a run's mixing does not depend on the device count.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

# Which mixing a step applies (`Mix.mode`).
NONE, MIXUP, SHUFFLEMIX, CUTMIX = 0, 1, 2, 3


class Draw(NamedTuple):
  """The raw variates of one batch, in the original's terms."""
  u_apply: jax.Array        # uniform: mixed at all when < mixup_prob
  u_switch: jax.Array       # uniform: CutMix when < mixup_switch_prob (both on)
  lam_mixup: jax.Array      # Beta(mixup, mixup) (1 when off)
  lam_cutmix: jax.Array     # Beta(cutmix, cutmix) (1 when off)
  u_shufflemix: jax.Array   # uniform: ShuffleMix when < smprob
  lam_shufflemix: jax.Array  # Beta(shufflemix, shufflemix)
  frame_order: jax.Array    # (T,) permutation: ShuffleMix takes frames frame_order[:n] from the paired clip
  cut_centre: jax.Array     # (2,) box centre (row, column), uniform over the frame (CutMix by alpha)
  cut_size: jax.Array       # (2,) box height, width (cutmix_minmax)
  cut_corner: jax.Array     # (2,) box top, left (cutmix_minmax)


class Mix(NamedTuple):
  """One batch's mixing: what `blend` and `mixed_losses` apply."""
  mode: jax.Array           # NONE, MIXUP, SHUFFLEMIX or CUTMIX
  lam: jax.Array            # the target's weight of the clip's own label
  frames: jax.Array         # (T,) bool: frames taken from the paired clip (ShuffleMix)
  box: jax.Array            # (4,) top, bottom, left, right (exclusive) of the CutMix box


def _cutmix_alpha(config: ml_collections.ConfigDict) -> float:
  # timm: a min/max range forces alpha 1 (the Beta draw then only decides whether to mix)
  return 1.0 if tuple(config.common.cutmix_minmax) else float(config.common.cutmix)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether training mixes (the original: --mixup > 0, --cutmix > 0 or --cutmix-minmax); checks the settings."""
  c = config.common
  on = float(c.mixup) > 0 or _cutmix_alpha(config) > 0
  if not on:
    return False
  if c.mixup_mode != 'batch':
    raise ValueError(f"common.mixup_mode={c.mixup_mode!r}: only 'batch' (one draw per batch) is ported")
  if c.smixmode != 'sm':
    raise ValueError(f"common.smixmode={c.smixmode!r}: only 'sm' (ShuffleMix of whole frames) is ported")
  minmax = tuple(c.cutmix_minmax)
  if minmax and not (len(minmax) == 2 and 0 <= minmax[0] < minmax[1] <= 1):
    raise ValueError(f'common.cutmix_minmax must be (min, max) with 0 <= min < max <= 1, got {minmax}')
  for key in ('mixup_prob', 'mixup_switch_prob', 'smprob'):
    if not 0 <= float(c[key]) <= 1:
      raise ValueError(f'common.{key} must be a probability, got {c[key]}')
  if float(c.mixup) > 0 and float(c.smprob) > 0 and float(c.shufflemix) <= 0:
    raise ValueError(f'common.smprob={c.smprob} needs common.shufflemix > 0 (the Beta alpha of ShuffleMix)')
  return True


def sample(config: ml_collections.ConfigDict, key: jax.Array, frames: int, height: int, width: int) -> Draw:
  """Every variate a batch may need, drawn whether used or not (the program does not branch)."""
  c = config.common
  ks = jax.random.split(key, 8)
  beta = lambda k, alpha: jax.random.beta(k, alpha, alpha) if alpha > 0 else jnp.ones(())
  u_apply, u_switch, u_shufflemix = jax.random.uniform(ks[0], (3,))
  sizes = jnp.array([height, width])
  minmax = tuple(c.cutmix_minmax)
  if minmax:
    low = jnp.array([int(height * minmax[0]), int(width * minmax[0])])
    high = jnp.array([int(height * minmax[1]), int(width * minmax[1])])
    cut_size = jax.random.randint(ks[6], (2,), low, high)
    cut_corner = jax.random.randint(ks[7], (2,), 0, sizes - cut_size)
  else:
    cut_size = cut_corner = jnp.zeros((2,), jnp.int32)
  return Draw(u_apply=u_apply, u_switch=u_switch,
              lam_mixup=beta(ks[1], float(c.mixup)), lam_cutmix=beta(ks[2], _cutmix_alpha(config)),
              u_shufflemix=u_shufflemix, lam_shufflemix=beta(ks[3], float(c.shufflemix)),
              frame_order=jax.random.permutation(ks[4], frames),
              cut_centre=jax.random.randint(ks[5], (2,), 0, sizes),
              cut_size=cut_size, cut_corner=cut_corner)


def decide(config: ml_collections.ConfigDict, draw: Draw, frames: int, height: int, width: int) -> Mix:
  """The original's `_mix_batch` rules on one draw."""
  c = config.common
  mixup_on, cutmix_on = float(c.mixup) > 0, _cutmix_alpha(config) > 0
  if mixup_on and cutmix_on:
    use_cutmix = draw.u_switch < float(c.mixup_switch_prob)
  else:
    use_cutmix = jnp.asarray(cutmix_on)
  lam = jnp.where(use_cutmix, draw.lam_cutmix, draw.lam_mixup)
  mixed = (draw.u_apply < float(c.mixup_prob)) & (lam != 1.0)
  shufflemix = draw.u_shufflemix < float(c.smprob)
  mode = jnp.where(~mixed, NONE, jnp.where(use_cutmix, CUTMIX, jnp.where(shufflemix, SHUFFLEMIX, MIXUP)))

  # CutMix's box: side sqrt(1 - lam) of the frame's about a uniform centre, clipped to the frame;
  # or (cutmix_minmax) drawn sides and corner. lam becomes the share outside the box.
  if tuple(c.cutmix_minmax):
    top_left, bottom_right = draw.cut_corner, draw.cut_corner + draw.cut_size
  else:
    half = jnp.floor(jnp.array([height, width]) * jnp.sqrt(1.0 - lam)).astype(jnp.int32) // 2
    limit = jnp.array([height, width])
    top_left = jnp.clip(draw.cut_centre - half, 0, limit)
    bottom_right = jnp.clip(draw.cut_centre + half, 0, limit)
  box = jnp.concatenate([top_left[:1], bottom_right[:1], top_left[1:], bottom_right[1:]])
  area = (box[1] - box[0]) * (box[3] - box[2])
  lam_cutmix = 1.0 - area / float(height * width)

  # ShuffleMix: the first round((1 - lam) * T) frames of a random order come from the paired clip
  count = jnp.round((1.0 - draw.lam_shufflemix) * frames)
  position = jnp.zeros((frames,), jnp.int32).at[draw.frame_order].set(jnp.arange(frames, dtype=jnp.int32))
  taken = position < count

  lam = jnp.select([mode == MIXUP, mode == SHUFFLEMIX, mode == CUTMIX],
                   [lam, draw.lam_shufflemix, lam_cutmix], jnp.ones_like(lam))
  return Mix(mode=mode, lam=lam, frames=taken, box=box)


def draw(config: ml_collections.ConfigDict, key: jax.Array, shape: tuple[int, ...]) -> Mix:
  """The mixing of a batch of clips of `shape` (B, T, H, W, C) from `key`."""
  batch, frames, height, width = shape[:4]
  if batch % 2:
    raise ValueError(f'mixing pairs clip i with clip B-1-i: the global batch must be even, got {batch}')
  return decide(config, sample(config, key, frames, height, width), frames, height, width)


def blend(x: jax.Array, mix: Mix) -> jax.Array:
  """The mixed batch: x * own + reversed x * other, the weights per frame and pixel (NTHWC)."""
  _, frames, height, width = x.shape[:4]
  rows, cols = jnp.arange(height), jnp.arange(width)
  in_box = (((rows >= mix.box[0]) & (rows < mix.box[1]))[:, None]
            & ((cols >= mix.box[2]) & (cols < mix.box[3]))[None, :])
  taken = jnp.where(mix.mode == SHUFFLEMIX, mix.frames[:, None, None],
                    (mix.mode == CUTMIX) & in_box[None])                     # (T, H, W)
  lam = mix.lam.astype(x.dtype)
  own = jnp.where(mix.mode == MIXUP, lam, jnp.where(taken, 0, 1).astype(x.dtype))
  other = jnp.where(mix.mode == MIXUP, 1 - lam, jnp.where(taken, 1, 0).astype(x.dtype))
  own, other = own[None, ..., None], other[None, ..., None]
  return x * own + jnp.flip(x, 0) * other


def mixed_losses(loss_fn: Callable[[jax.Array], dict[str, Any]], labels: jax.Array, lam: jax.Array
                 ) -> dict[str, Any]:
  """The objective on the mixed targets: lam * loss_fn(labels) + (1 - lam) * loss_fn(labels reversed)."""
  own, paired = loss_fn(labels), loss_fn(jnp.flip(labels, 0))
  return jax.tree.map(lambda a, b: lam.astype(a.dtype) * a + (1 - lam.astype(a.dtype)) * b, own, paired)


def mixed_input_losses(input_loss_fn: Callable[[jax.Array], Sequence[dict[str, Any]]], labels: jax.Array,
                       lams: Sequence[jax.Array]) -> dict[str, Any]:
  """Inputs mixed each with a draw of its own (train_fusion.py): input i's loss terms on its mixed
  targets (`lams[i]`), summed over the inputs. `input_loss_fn(labels)` gives one loss dict per input."""
  per_input = [mixed_losses(lambda y, i=i: input_loss_fn(y)[i], labels, lam) for i, lam in enumerate(lams)]
  return jax.tree.map(lambda *terms: sum(terms), *per_input)
