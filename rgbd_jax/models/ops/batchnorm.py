"""BatchNorm kernels: per-channel column sums, batch moments, and BatchNorm+ReLU with its closed-form gradient.

No paper semantics here beyond torch's BatchNorm arithmetic: `layers.TorchBatchNorm`
and `layers.fused_units` decide what is normalised and how running statistics move.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def column_sum(z: jax.Array) -> jax.Array:
  """Sum over every axis but the last; on CPU a fused fold of the rows, then a matmul with ones.

  XLA's CPU backend rewrites large reductions into slow reduce-window trees;
  a matrix-vector product streams the data once, vectorised and threaded.
  Its operand is materialised, though, so when z is an elementwise expression
  (a square, a masked product) first adding FOLD equal blocks of rows in one
  fused loop writes FOLD times less: 5x faster for the stem's BatchNorm
  moments, and shorter float32 accumulation chains (1e-4 -> 8e-6 relative on
  294912 rows). 16 blocks measured as slow as no fold (41 ms against 8).
  """
  return _column_sum(z, as_matmul=jax.default_backend() == 'cpu')


def _column_sum(z: jax.Array, as_matmul: bool) -> jax.Array:
  """`column_sum` as a matmul (the CPU form) or as a plain reduction (GPU/TPU, fast there)."""
  z = z.reshape(-1, z.shape[-1])
  if not as_matmul:
    return jnp.sum(z, axis=0)
  fold = next(k for k in (_FOLD, 4, 2, 1) if z.shape[0] % k == 0)
  if fold > 1 and z.shape[0] >= _FOLD_MIN_ROWS:
    blocks = z.reshape(fold, -1, z.shape[-1])
    z = functools.reduce(jnp.add, [blocks[i] for i in range(fold)])
  # HIGHEST: a float32 matmul may otherwise run as TF32/bfloat16 passes (the default on
  # GPUs and TPUs), which would put BatchNorm statistics at 1e-3 precision
  return jnp.matmul(jnp.ones((z.shape[0],), z.dtype), z, precision=lax.Precision.HIGHEST)


_FOLD = 8
_FOLD_MIN_ROWS = 4096  # small sums (fusion BatchNorms, tokens): one loop fewer, not worth a fold


def batch_moments(y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance over every axis but the last (two-pass, in >= float32)."""
  y = y.astype(jnp.promote_types(y.dtype, jnp.float32))
  count = y.size // y.shape[-1]
  mean = column_sum(y) / count
  var = column_sum(jnp.square(y - mean)) / count
  return mean, var


@jax.custom_vjp
def scale_shift(y: jax.Array, mult: jax.Array, shift: jax.Array) -> jax.Array:
  """y * mult + shift per channel (last axis); its gradient sums with `column_sum`."""
  return y * mult.astype(y.dtype) + shift.astype(y.dtype)


def _scale_shift_fwd(y, mult, shift):
  return scale_shift(y, mult, shift), (y, mult, shift)


def _scale_shift_bwd(res, g):
  y, mult, shift = res
  acc = jnp.promote_types(g.dtype, jnp.float32)
  d_mult = column_sum(g.astype(acc) * y.astype(acc)).astype(mult.dtype)
  d_shift = column_sum(g.astype(acc)).astype(shift.dtype)
  return g * mult.astype(g.dtype), d_mult, d_shift


scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bn_relu_train(y: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
  """relu(BatchNorm(y)) with batch statistics over every axis but the last.

  Returns (out, mean, biased var); the moments are kept in >= float32. The
  forward is `scale_shift` with the batch affine, as at evaluation; the
  backward is the closed form of BatchNorm's gradient (two column sums over
  the ReLU-masked gradient, then one fused pass), which reads the activation
  three times where differentiating the moments op by op reads it five or six
  (and makes XLA reduce the mean's cotangent with a slow reduce-window tree).
  """
  return _bn_relu_train_fwd(y, scale, bias, epsilon)[0]


def _bn_relu_train_fwd(y, scale, bias, epsilon):
  mean, var = batch_moments(y)
  rstd = lax.rsqrt(var + epsilon)
  mult = scale.astype(var.dtype) * rstd
  out = nn.relu(scale_shift(y, mult, bias.astype(var.dtype) - mean * mult))
  return (out, mean, var), (y, out, mean, rstd, mult, scale, bias)


def _bn_relu_train_bwd(epsilon, res, cotangents):
  y, out, mean, rstd, mult, scale, bias = res
  g, g_mean, g_var = cotangents
  acc = mean.dtype
  n = y.size // y.shape[-1]
  centred = y.astype(acc) - mean
  # torch's ReLU passes the gradient where its output is positive
  gz = jnp.where(out > 0, g, jnp.zeros((), g.dtype)).astype(acc)
  # two matrix-vector sums read the two products straight from one fused loop;
  # a concatenation of them would be one more copy (XLA's CPU concat is not fused)
  d_bias, d_centred = column_sum(gz), column_sum(gz * centred)
  d_scale = d_centred * rstd
  # d out / d y through the normalisation, the batch mean and the batch variance,
  # plus any gradient that reached the returned moments directly
  c0 = (g_mean - mult * d_bias) / n
  c1 = (2 * g_var - mult * rstd * rstd * d_centred) / n
  dy = (mult * gz + c0 + centred * c1).astype(y.dtype)
  return dy, d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


bn_relu_train.defvjp(_bn_relu_train_fwd, _bn_relu_train_bwd)
