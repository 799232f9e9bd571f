"""Building blocks of the networks: Unit3D, the torch BatchNorm, inception blocks.

The performance kernels these use (BatchNorm with a closed-form gradient,
column sums, convolutions as matmuls, the pools) are in `ops/`; this file
reads as the paper. Everything runs channels-last. The spatial stem has temporal kernel 1 everywhere,
so its convolutions run as 2-D convolutions over all B*T frames (NHWC); only the
3x3x3 max pool of a spatial inception block looks at neighbouring frames.

Parity notes (the original is TF-"SAME" I3D code on top of PyTorch):
* padding is computed from the input size at call time (`same_padding`);
* pools (`ops/pool.py`) pad with ZEROS before the max (not -inf), so a border value
  is max(window, 0) whenever the window touches the padding;
* BatchNorm follows torch: normalise with the biased batch variance, update the
  running variance with the unbiased one, running = (1 - m) * running + m * batch.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from rgbd_jax.models.ops.batchnorm import batch_moments, bn_relu_train, scale_shift
from rgbd_jax.models.ops.conv import conv_same
from rgbd_jax.models.ops.pool import max_pool_3x3x3, temporal_max3

Dtype = Any

# torch's default init of Conv/Linear weights (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance scaling 1/3, uniform.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

# Unit3D's BatchNorm3d(eps=1e-3, momentum=0.01); the 2-D BatchNorms of the fusion
# network use torch's defaults (eps=1e-5, momentum=0.1).
UNIT3D_BN_EPS = 1e-3
UNIT3D_BN_MOMENTUM = 0.01


class TorchBatchNorm(nn.Module):
  """BatchNorm with torch's semantics; variables scale/bias and batch_stats mean/var.

  Call it on an activation, or let a parent that fused several convolutions
  ask for the affine map (`eval_affine`/`train_affine`) and apply it itself.
  """
  features: int
  momentum: float = 0.1
  epsilon: float = 1e-5
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.scale = self.param('scale', nn.initializers.ones, (self.features,), self.param_dtype)
    self.bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    self.ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (self.features,), self.param_dtype)
    self.ra_var = self.variable('batch_stats', 'var', jnp.ones, (self.features,), self.param_dtype)

  def eval_affine(self) -> tuple[jax.Array, jax.Array]:
    """(multiplier, shift) that normalise with the running statistics."""
    mult = self.scale * lax.rsqrt(self.ra_var.value + self.epsilon)
    return mult, self.bias - self.ra_mean.value * mult

  def update_running(self, mean: jax.Array, var: jax.Array, count: int) -> None:
    """torch's update: running = (1 - m) running + m batch, with the UNBIASED variance."""
    if not self.is_initializing():
      m = self.momentum
      unbiased = var * (count / max(count - 1, 1))
      dt = self.ra_mean.value.dtype
      self.ra_mean.value = (1 - m) * self.ra_mean.value + m * lax.stop_gradient(mean).astype(dt)
      self.ra_var.value = (1 - m) * self.ra_var.value + m * lax.stop_gradient(unbiased).astype(dt)

  def train_affine(self, mean: jax.Array, var: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """(multiplier, shift) from batch statistics; updates the running statistics."""
    self.update_running(mean, var, count)
    mult = self.scale.astype(var.dtype) * lax.rsqrt(var + self.epsilon)
    return mult, self.bias.astype(var.dtype) - mean * mult

  def __call__(self, y: jax.Array, train: bool) -> jax.Array:
    if train:
      mean, var = batch_moments(y)
      mult, shift = self.train_affine(mean, var, y.size // y.shape[-1])
    else:
      mult, shift = self.eval_affine()
    return scale_shift(y, mult, shift)


class ConvKernel(nn.Module):
  """Holds one convolution kernel, named `kernel` (the torch `conv3d.weight`).

  `shape` is the kernel's spatial part as we hold it: () for 1x1x1, (kh, kw)
  for 1 x kh x kw, (kt,) for kt x 1 x 1; the size-1 torch dims are dropped.
  """
  features: int
  shape: tuple[int, ...] = ()
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> jax.Array:
    return self.param('kernel', torch_default_init, (*self.shape, in_features, self.features),
                      self.param_dtype)


class Unit3D(nn.Module):
  """Conv (no bias) + BatchNorm3d(eps 1e-3, momentum 0.01) + ReLU, TF-SAME padding."""
  features: int
  kernel_shape: tuple[int, ...] = ()
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.conv3d = ConvKernel(self.features, self.kernel_shape, self.param_dtype)
    self.bn = TorchBatchNorm(self.features, UNIT3D_BN_MOMENTUM, UNIT3D_BN_EPS, self.param_dtype)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return fused_units([self], x, train, self.dtype, self.stride)[0]


def fused_units(units: Sequence[Unit3D], x: jax.Array, train: bool, dtype: Dtype,
                stride: int = 1) -> list[jax.Array]:
  """Runs Unit3Ds that read the same input as ONE convolution, then splits.

  The kernels are concatenated at call time (the variable tree keeps the
  original's separate tensors). At evaluation the BatchNorm is folded into
  the kernel; in training the batch statistics are per channel, so computing
  them on the concatenated output is the same as per unit.
  """
  x = x.astype(dtype)
  kernels = [u.conv3d(x.shape[-1]) for u in units]
  kernel = jnp.concatenate(kernels, axis=-1) if len(kernels) > 1 else kernels[0]
  if train:
    epsilon = units[0].bn.epsilon
    if any(u.bn.epsilon != epsilon for u in units):
      raise ValueError('fused units must share the BatchNorm epsilon')
    y = conv_same(x, kernel.astype(dtype), stride)
    scale = jnp.concatenate([u.bn.scale for u in units])
    bias = jnp.concatenate([u.bn.bias for u in units])
    y, mean, var = bn_relu_train(y, scale, bias, epsilon)
    count, start = y.size // y.shape[-1], 0
    for u in units:
      sl = slice(start, start + u.features)
      u.bn.update_running(mean[sl], var[sl], count)
      start += u.features
  else:
    affines = [u.bn.eval_affine() for u in units]
    mult = jnp.concatenate([a[0] for a in affines])
    shift = jnp.concatenate([a[1] for a in affines])
    y = nn.relu(conv_same(x, (kernel * mult).astype(dtype), stride) + shift.astype(dtype))
  if len(units) == 1:
    return [y]
  splits, acc = [], 0
  for u in units[:-1]:
    acc += u.features
    splits.append(acc)
  return jnp.split(y, splits, axis=-1)


class SpatialInception(nn.Module):
  """Spatial inception block on (B, T, H, W, C): 1x1 | 1x1-3x3 | 1x1-3x3 | pool3x3x3-1x1."""
  widths: tuple[int, ...]  # [b0, b1a, b1b, b2a, b2b, b3b] as the original lists them
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.widths
    unit = lambda f, k, name: Unit3D(f, k, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    b0, b1a, b1b = unit(c[0], (), 'b0'), unit(c[1], (), 'b1a'), unit(c[2], (3, 3), 'b1b')
    b2a, b2b, b3b = unit(c[3], (), 'b2a'), unit(c[4], (3, 3), 'b2b'), unit(c[5], (), 'b3b')
    b, t, h, w, _ = x.shape
    frames = x.reshape(b * t, h, w, x.shape[-1])
    y0, y1, y2 = fused_units([b0, b1a, b2a], frames, train, self.dtype)
    y1 = b1b(y1, train)
    y2 = b2b(y2, train)
    y3 = b3b(max_pool_3x3x3(x.astype(self.dtype)).reshape(frames.shape), train)
    return jnp.concatenate([y0, y1, y2, y3], axis=-1).reshape(b, t, h, w, -1)


class TemporalInception(nn.Module):
  """Temporal inception block on tokens (B, n, C): kernels 3x1x1 over time."""
  widths: tuple[int, ...]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = self.widths
    unit = lambda f, k, name: Unit3D(f, k, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    b0, b1a, b1b = unit(c[0], (), 'b0'), unit(c[1], (), 'b1a'), unit(c[2], (3,), 'b1b')
    b2a, b2b, b3b = unit(c[3], (), 'b2a'), unit(c[4], (3,), 'b2b'), unit(c[5], (), 'b3b')
    y0, y1, y2 = fused_units([b0, b1a, b2a], x, train, self.dtype)
    y1 = b1b(y1, train)
    y2 = b2b(y2, train)
    y3 = b3b(temporal_max3(x.astype(self.dtype), axis=1), train)
    return jnp.concatenate([y0, y1, y2, y3], axis=-1)
