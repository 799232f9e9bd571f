"""Clip normalisation and the FRP heatmap in JAX, for uint8 batches inside the jitted step.

`heatmap` computes, for a whole batch at once, what `dynamic_image.heatmap`
computes on the host for one clip (see that module for the semantics), with
no Python loop over clips, frames, windows or pixels (only over the `w`
rank-pooling taps and the kernel taps of the morphology, which XLA fuses):

* rank pooling of the windows of `w` frames with weights `c_j = 2j - w - 1`
  (j = 1..w) is an integer correlation down the time axis,
  `P[k] = sum_j c_j u8[k + j - 1]`, in int32 (exact: |P| <= 255 * w^2 / 4).
  The weights sum to zero, so the -127.5 of the normalisation cancels, and the
  1/128 cancels in the min-max normalisation: the map of the normalised frames,
  min-max normalised, is exactly the integer map min-max normalised;
* ReLU, then min-max over the whole window map (H, W and the 3 channels); a
  constant map gives zeros (scale 0);
* grey (0.2989, 0.587, 0.114) of the normalised map, computed from the integer
  map as `(g.P - lo * sum(g)) * scale` (the host's order of operations);
* static map: grey values strictly above the window's grey mean. The mean is
  the grey formula applied to the channel means of P (int32 sums, exact, then
  divided by H*W in float32), so pixels whose map value equals the channel
  means (a tie with the mean) get bit-identical grey values and are not above
  it. The host takes the float32 mean of the grey values instead, which can
  land an ulp below such a tie and then counts the tied pixels as above: on
  constructed exact ties the two can differ completely; on the golden and
  random clips they agree to ~4e-8 relative L2;
* erosion by a 2x2 rectangle with OpenCV's default anchor (1, 1): pixel (i, j)
  is the minimum over rows i-1..i and columns j-1..j; dilation by a 3x3
  rectangle: maximum over rows i-1..i+1, columns j-1..j+1. OpenCV's default
  border for both is neutral (+inf for erosion, -inf for dilation), i.e. only
  pixels inside the image count. Checked against cv2.erode/cv2.dilate;
* static map min-max normalised per window, heatmap `(grey + static) * static`,
  window k placed at frame k + w - 1 (zeros in front); T < w gives all zeros.

Memory, for B clips of T frames of H x W, K = T - w + 1 windows: the largest
temporaries are the int32 window map P (B*K*H*W*3 * 4 bytes; XLA may instead
recompute it from the uint8 input inside the fusions that read it) and a few
float32 (B, K, H, W) maps (grey, static before/after morphology), plus the
(B, T, H, W, 1) float32 output. Nothing of size T*w*H*W*3 exists: the w taps
are summed in one fusion. At B=8, T=64, w=10, 224x224: input 77 MB, P 265 MB,
each (B, K, H, W) float32 map 88 MB, output 103 MB; XLA's CPU compilation of
`heatmap` alone reports 265 MB of temporaries there (memory_analysis; a GPU
compilation was not measured). P would fit int16 (|P| <= 32767 up to w = 22),
halving it, at the cost of int16 arithmetic on the accelerator.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from rgbd_jax.data import clips

# torchvision's rgb_to_grayscale weights, as in dynamic_image.GRAY.
_GRAY = (0.2989, 0.587, 0.114)
_INT32_MAX = 2**31 - 1


def normalise(clips_u8: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 clips -> `(u8 - 127.5) / 128` in `dtype`.

  Computed in float32, where both steps are exact (as `transforms.normalise` does on the
  host), then rounded once to `dtype`.
  """
  if clips_u8.dtype != jnp.uint8:
    raise ValueError(f'expected uint8 clips, got {clips_u8.dtype}')
  out = (clips_u8.astype(jnp.float32) - jnp.float32(127.5)) * jnp.float32(1 / 128)
  return out.astype(dtype)


def rank_pool_weights(w: int) -> tuple[int, ...]:
  """The integer rank-pooling weights `2j - w - 1`, j = 1..w."""
  return tuple(2 * j - w - 1 for j in range(1, w + 1))


def _rank_pool(x: jax.Array, w: int) -> jax.Array:
  """(B, T, H, W, C) uint8 -> (B, T - w + 1, H, W, C) int32: sum_j c_j x[:, k + j]."""
  k = x.shape[1] - w + 1
  acc = None
  for j, c in enumerate(rank_pool_weights(w)):
    if c == 0:  # the middle tap of an odd window
      continue
    term = x[:, j:j + k].astype(jnp.int32) * jnp.int32(c)
    acc = term if acc is None else acc + term
  if acc is None:  # w == 1: the only weight is 0
    acc = jnp.zeros((x.shape[0], k) + x.shape[2:], jnp.int32)
  return acc


def _minmax_scale(lo: jax.Array, hi: jax.Array) -> jax.Array:
  """1 / (hi - lo) in float32, or 0 where the map is constant."""
  span = (hi - lo).astype(jnp.float32)
  return jnp.where(span > 0, jnp.float32(1) / jnp.where(span > 0, span, jnp.float32(1)), jnp.float32(0))


def _grey(p0, p1, p2, lo_f, scale):
  """Grey value of the min-max normalised map, from the (float32) integer map."""
  g0, g1, g2 = (jnp.float32(g) for g in _GRAY)
  gsum = (g0 + g1) + g2  # float32, as numpy sums the 3 weights
  return ((p0 * g0 + p1 * g1) + p2 * g2 - lo_f * gsum) * scale


def _erode_2x2(x: jax.Array) -> jax.Array:
  """cv2.erode with a 2x2 rectangle, default anchor and border, on (..., H, W)."""
  pad = [(0, 0)] * (x.ndim - 2) + [(1, 0), (1, 0)]
  window = (1,) * (x.ndim - 2) + (2, 2)
  return jax.lax.reduce_window(x, jnp.float32(jnp.inf), jax.lax.min, window, (1,) * x.ndim, pad)


def _dilate_3x3(x: jax.Array) -> jax.Array:
  """cv2.dilate with a 3x3 rectangle, default anchor and border, on (..., H, W)."""
  pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
  window = (1,) * (x.ndim - 2) + (3, 3)
  return jax.lax.reduce_window(x, jnp.float32(-jnp.inf), jax.lax.max, window, (1,) * x.ndim, pad)


def heatmap(clips_u8: jax.Array, w: int) -> jax.Array:
  """(B, T, H, W, 3) uint8 -> (B, T, H, W, 1) float32 FRP heatmaps (`w` is static).

  Equal, clip by clip, to `dynamic_image.heatmap(clip, w)[..., None]` up to float32 rounding.
  """
  if clips_u8.dtype != jnp.uint8 or clips_u8.ndim != 5 or clips_u8.shape[-1] != 3:
    raise ValueError(f'expected (B, T, H, W, 3) uint8 clips, got {clips_u8.dtype} {clips_u8.shape}')
  w = int(w)
  if w < 1:
    raise ValueError(f'heatmap window w must be >= 1, got {w}')
  b, t, h, wd, _ = clips_u8.shape
  k = t - w + 1  # windows that survive the shift by w - 1 frames
  if k <= 0:
    return jnp.zeros((b, t, h, wd, 1), jnp.float32)

  pooled = jnp.maximum(_rank_pool(clips_u8, w), 0)  # (B, K, H, W, 3) int32, ReLU
  lo = pooled.min(axis=(2, 3, 4))  # (B, K)
  hi = pooled.max(axis=(2, 3, 4))
  scale = _minmax_scale(lo, hi)[:, :, None, None]
  lo_f = lo.astype(jnp.float32)[:, :, None, None]

  pf = pooled.astype(jnp.float32)  # exact: |P| <= 255 * w^2 / 4
  body = _grey(pf[..., 0], pf[..., 1], pf[..., 2], lo_f, scale)  # (B, K, H, W)

  # The window's grey mean: channel means from exact integer sums, through the same formula.
  n = h * wd
  if 255 * (w * w // 4) * n <= _INT32_MAX:
    sums = pooled.sum(axis=(2, 3), dtype=jnp.int32).astype(jnp.float32)
  else:  # huge frames or windows: per-row int32 sums, then float32
    sums = pooled.sum(axis=3, dtype=jnp.int32).astype(jnp.float32).sum(axis=2)
  means = sums / jnp.float32(n)  # (B, K, 3)
  mean = _grey(means[..., 0, None, None], means[..., 1, None, None], means[..., 2, None, None],
               lo_f, scale)

  static = jnp.where(body > mean, body, jnp.float32(0))
  static = _dilate_3x3(_erode_2x2(static))
  s_lo = static.min(axis=(2, 3), keepdims=True)
  s_hi = static.max(axis=(2, 3), keepdims=True)
  static = (static - s_lo) * _minmax_scale(s_lo, s_hi)

  out = (body + static) * static  # (B, K, H, W)
  out = jnp.concatenate([jnp.zeros((b, w - 1, h, wd), jnp.float32), out], axis=1)
  return out[..., None]


def model_inputs(batch: Mapping[str, jax.Array], keys: Mapping[str, tuple[str, str]], w: int,
                 dtype=jnp.float32) -> dict:
  """The model's inputs from a batch whose clips are (B, T, H, W, 3) uint8.

  `keys` is `clips.UNIMODAL_KEYS` or `clips.FUSION_KEYS` (stream -> (clip key, heatmap key));
  each distinct clip key it names (unimodal: 'video'; fusion: 'rgb' and 'depth') must be in
  `batch`, and is replaced by its normalised clip (in `dtype`), its heatmap (float32) going under
  the paired heatmap key. Other entries (label, mask, index, ...) pass through unchanged.
  With a window `w` < 1 the FRP is the identity and the model does not read the heatmap: it is
  then all zeros (no error; under jit XLA drops it, as it drops an unread heatmap with frp off).
  """
  out = dict(batch)
  pairs = list(dict.fromkeys(keys.values()))  # unimodal: rgb and depth share ('video', 'heatmap')
  missing = [c for c, _ in pairs if c not in batch]
  if missing:
    raise KeyError(f'clip keys {missing} are not in the batch ({sorted(batch)})')
  for clip_key, heat_key in pairs:
    u8 = batch[clip_key]
    out[clip_key] = normalise(u8, dtype)
    out[heat_key] = heatmap(u8, w) if int(w) >= 1 else jnp.zeros(u8.shape[:-1] + (1,), jnp.float32)
  return out


def model_inputs_for(batch: Mapping[str, jax.Array], fusion: bool, w: int, dtype=jnp.float32) -> dict:
  """`model_inputs` with the key pairing of the unimodal (False) or fusion (True) network."""
  return model_inputs(batch, clips.FUSION_KEYS if fusion else clips.UNIMODAL_KEYS, w, dtype)
