"""Zero-padded TF-SAME max pools with torch's forward and gradient.

The original pads with `F.pad` (zeros, not -inf) and then max-pools, so a
window that touches the padding returns max(window, 0). Its backward (torch's
max pool) sends each output's whole gradient to the FIRST maximal element of
the window in raster order (t, then h, then w); padding positions that win
take their share with them.

A max over a box is a max over each axis in turn, and padding each pass with
zeros is exact (a pass over padding-only rows gives 0, what the padded box
holds there). The passes run from the innermost axis outwards (w, then h,
then t), each routing its gradient to its own first maximum: the outer pass
picks the first t whose plane holds the maximum, the next the first h of that
plane's rows, the last the first w of that row, which is exactly torch's
raster-order first maximum, ties included (ReLU zeros and zero padding make
ties common). Slices fuse into cheap loops; XLA's CPU reduce-window is several
times slower for these windows, and a joint scan over all window taps makes
XLA split its backward into one loop per tap.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF-"SAME" padding of one dimension, exactly as the original computes it."""
  if size % stride == 0:
    total = max(kernel - stride, 0)
  else:
    total = max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _taps(x: jax.Array, axis: int, k: int, stride: int, pad: tuple[int, int]):
  """The zero-padded input's k strided window taps along `axis`."""
  if pad != (0, 0):
    widths = [(0, 0)] * x.ndim
    widths[axis] = pad
    x = jnp.pad(x, widths)
  n = (x.shape[axis] - k) // stride + 1
  return [lax.slice_in_dim(x, o, o + (n - 1) * stride + 1, stride, axis) for o in range(k)], x.shape[axis]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_along(x: jax.Array, axis: int, k: int, stride: int, pad: tuple[int, int]) -> jax.Array:
  """1-D max pool along `axis`: zero padding `pad`, window k, floor mode."""
  taps, _ = _taps(x, axis, k, stride, pad)
  return functools.reduce(jnp.maximum, taps)


def _max_along_fwd(x, axis, k, stride, pad):
  return _max_along(x, axis, k, stride, pad), x


def _max_along_bwd(axis, k, stride, pad, x, g):
  # Like torch's max pool, the whole gradient goes to the first maximal tap
  # (JAX's own rule for max splits it over ties, and costs more).
  if stride == 1:
    return (_stride1_grad(x, g, axis, k, pad[0]),)
  taps, length = _taps(x, axis, k, stride, pad)
  out = functools.reduce(jnp.maximum, taps)
  zero = jnp.zeros((), g.dtype)
  routed = [jnp.where(hit, g, zero) for hit in _first_hits(taps, out)]
  # Padded position p = r + stride * m receives tap o = r + stride * q of
  # output m - q: build each residue r by shifts, then interleave them.
  n = g.shape[axis]
  m_len = -(-length // stride)
  residues = []
  for r in range(stride):
    acc = None
    for o in range(r, k, stride):
      q = (o - r) // stride
      config = [(0, 0, 0)] * g.ndim
      config[axis] = (q, m_len - q - n, 0)
      part = lax.pad(routed[o], zero, config)
      acc = part if acc is None else acc + part
    if acc is None:
      shape = list(g.shape)
      shape[axis] = m_len
      acc = jnp.zeros(shape, g.dtype)
    residues.append(acc)
  grad = jnp.stack(residues, axis=axis + 1)  # stride >= 2 here: stride 1 returned above
  shape = list(g.shape)
  shape[axis] = m_len * stride
  grad = grad.reshape(shape)
  return (lax.slice_in_dim(grad, pad[0], pad[0] + x.shape[axis], axis=axis),)


def _first_hits(taps, out):
  """Per tap, where it is the first (in tap order) to equal the window's max."""
  hits, taken = [], None
  for tap in taps:
    hit = tap == out
    if taken is not None:
      hit = hit & ~taken
    taken = hit if taken is None else taken | hit
    hits.append(hit)
  return hits


def _stride1_grad(x, g, axis, k, lo):
  """The stride-1 gradient in gather form: one fused expression per input element.

  Input i receives tap o of output m = i + lo - o when that tap is the output's
  first maximum. Over the extended outputs e = m + k - 1 - lo (those reaching
  any input, in range or not), the taps are windows of x padded by k - 1 and
  the gradient is g padded to that range with zeros, so out-of-range outputs
  send nothing; input i then sums routed tap o at e = i + k - 1 - o. Written
  this way XLA emits one loop per pass, where scattering each tap's share
  separately costs one loop per tap.
  """
  length, ext = x.shape[axis], x.shape[axis] + k - 1
  taps, _ = _taps(x, axis, k, 1, (k - 1, k - 1))  # the ext windows of x padded by k - 1
  out = functools.reduce(jnp.maximum, taps)
  widths = [(0, 0)] * x.ndim
  widths[axis] = (k - 1 - lo, ext - g.shape[axis] - (k - 1 - lo))
  ge = jnp.pad(g, widths)
  zero = jnp.zeros((), g.dtype)
  parts = [lax.slice_in_dim(jnp.where(hit, ge, zero), k - 1 - o, k - 1 - o + length, axis=axis)
           for o, hit in enumerate(_first_hits(taps, out))]
  return functools.reduce(jnp.add, parts)


_max_along.defvjp(_max_along_fwd, _max_along_bwd)


def max_pool_same(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """Zero-padded TF-SAME max pool over the axes just before the channel axis.

  `window`/`strides` cover the trailing spatial axes of x (..., *spatial, C);
  the padding is computed from x's sizes as the original does at call time.
  """
  window, strides = tuple(int(w) for w in window), tuple(int(s) for s in strides)
  if len(window) != len(strides) or len(window) > x.ndim - 1:
    raise ValueError(f'pool window {window} / strides {strides} do not fit an input of shape {x.shape}')
  lead = x.ndim - 1 - len(window)
  # Materialise the input once: otherwise XLA fuses the producer (concat, FRP)
  # into the pool and recomputes it for every window tap.
  x = lax.optimization_barrier(x)
  # innermost axis first: the composed first-maximum routing is then torch's raster order
  for i in reversed(range(len(window))):
    axis, k, st = lead + i, window[i], strides[i]
    x = _max_along(x, axis, k, st, same_padding(x.shape[axis], k, st))
  return x


def temporal_max3(x: jax.Array, axis: int) -> jax.Array:
  """Max over a window of 3 along `axis`, stride 1, zero padding (1, 1)."""
  return _max_along(x, axis, 3, 1, (1, 1))


def max_pool_3x3x3(x: jax.Array) -> jax.Array:
  """The spatial inception's 3x3x3 stride-1 zero-padded max pool on (B, T, H, W, C)."""
  return max_pool_same(x, (3, 3, 3), (1, 1, 1))
