"""Building blocks against hand computations and torch's own layers."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgbd_jax.models import layers
from rgbd_jax.models.ops import batchnorm
from rgbd_jax.models.ops import conv
from rgbd_jax.models.ops import pool
from rgbd_jax.models.frp import FRP, pool_heatmap_to


def _tf_same(size, k, s):
  # TF "SAME": output ceil(size / s), total padding so the last window fits.
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


@pytest.mark.parametrize('size', [1, 2, 7, 8, 28, 56, 224, 225])
@pytest.mark.parametrize('k,s', [(1, 1), (3, 1), (3, 2), (2, 2), (7, 2), (1, 2)])
def test_same_padding_matches_tf_rule(size, k, s):
  front, back = pool.same_padding(size, k, s)
  assert (front, back) == _tf_same(size, k, s)
  assert (size + front + back - k) // s + 1 == -(-size // s)


def test_same_padding_examples():
  assert pool.same_padding(224, 7, 2) == (2, 3)
  assert pool.same_padding(112, 3, 2) == (0, 1)
  assert pool.same_padding(7, 3, 2) == (1, 1)
  assert pool.same_padding(14, 2, 2) == (0, 0)
  assert pool.same_padding(64, 3, 1) == (1, 1)


def _torch_pool(x, window, strides):
  """The original's MaxPool3dSamePadding semantics: F.pad with zeros, then max pool (floor)."""
  nsp = len(window)
  pads = [pool.same_padding(n, k, s) for n, k, s in zip(x.shape[1:-1], window, strides)]
  xt = torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)
  flat = [p for pair in reversed(pads) for p in pair]
  torch_pool = F.max_pool3d if nsp == 3 else F.max_pool2d
  return xt, torch_pool(F.pad(xt, flat), window, strides)


@pytest.mark.parametrize('shape,window,strides', [
    ((2, 5, 7, 9, 4), (3, 3, 3), (1, 1, 1)),
    ((3, 8, 8, 2), (3, 3), (2, 2)),
    ((3, 7, 9, 2), (3, 3), (2, 2)),
    ((3, 8, 6, 2), (2, 2), (2, 2)),
    ((3, 7, 7, 2), (2, 2), (2, 2)),
])
def test_max_pool_zero_padding_and_gradient_match_torch(shape, window, strides):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape) - 0.5  # mostly negative: zero padding wins at the borders
  y, vjp = jax.vjp(lambda a: pool.max_pool_same(a, window, strides), jnp.asarray(x, jnp.float32))
  xt, yt = _torch_pool(x.astype(np.float32), window, strides)
  np.testing.assert_array_equal(np.asarray(y), np.moveaxis(yt.detach().numpy(), 1, -1))
  g = rng.normal(size=y.shape).astype(np.float32)
  yt.backward(torch.tensor(np.moveaxis(g, -1, 1)))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), np.moveaxis(xt.grad.numpy(), 1, -1),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('shape,window,strides', [
    ((2, 5, 7, 9, 4), (3, 3, 3), (1, 1, 1)),
    ((2, 6, 7, 3), (2, 2), (1, 1)),  # stride 1, pad (0, 1)
    ((2, 7, 8, 3), (5, 4), (1, 1)),  # stride 1, pads (2, 2) and (1, 2)
    ((3, 9, 9, 2), (3, 3), (2, 2)),
    ((3, 8, 8, 2), (3, 3), (2, 2)),
    ((3, 8, 6, 2), (2, 2), (2, 2)),
])
def test_max_pool_gradient_ties_go_to_torchs_first_maximum(shape, window, strides):
  """Post-ReLU maps are full of equal values (zeros, here also ones); torch routes
  each output's gradient to the first maximum of its window in (t, h, w) order."""
  rng = np.random.default_rng(5)
  x = np.minimum(np.maximum(rng.normal(size=shape), 0.0), 1.0).astype(np.float32)
  assert (x == 0).mean() > 0.3 and (x == 1).mean() > 0.1
  y, vjp = jax.vjp(lambda a: pool.max_pool_same(a, window, strides), jnp.asarray(x))
  xt, yt = _torch_pool(x, window, strides)
  np.testing.assert_array_equal(np.asarray(y), np.moveaxis(yt.detach().numpy(), 1, -1))
  g = rng.normal(size=y.shape).astype(np.float32)
  yt.backward(torch.tensor(np.moveaxis(g, -1, 1)))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), np.moveaxis(xt.grad.numpy(), 1, -1),
                             rtol=1e-6, atol=1e-6)


def test_max_pool_borders_are_max_with_zero():
  x = -np.ones((1, 3, 3, 1), np.float32)
  y = pool.max_pool_same(jnp.asarray(x), (3, 3), (1, 1))
  # every window of a 3x3 all -1 map touches the zero padding except the centre one
  expected = np.zeros((1, 3, 3, 1), np.float32)
  expected[0, 1, 1, 0] = -1.0
  np.testing.assert_array_equal(np.asarray(y), expected)


def test_max_pool_3x3x3_equals_direct_window_max():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 5, 6, 3)).astype(np.float32)
  y = np.asarray(pool.max_pool_3x3x3(jnp.asarray(x)))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
  ref = np.full_like(x, -np.inf)
  for dt in range(3):
    for dh in range(3):
      for dw in range(3):
        ref = np.maximum(ref, xp[:, dt:dt + 4, dh:dh + 5, dw:dw + 6])
  np.testing.assert_array_equal(y, ref)


def test_temporal_max3_zero_padded():
  x = jnp.asarray([[[-3.0], [-1.0], [-2.0], [5.0]]])
  np.testing.assert_array_equal(np.asarray(pool.temporal_max3(x, axis=1))[0, :, 0], [0.0, -1.0, 5.0, 5.0])


@pytest.mark.parametrize('k,stride,size', [((7, 7), 2, 32), ((3, 3), 1, 9), ((3, 3), 2, 9), ((), 1, 5)])
def test_conv_same_matches_torch_with_tf_padding(k, stride, size):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
  w = rng.normal(size=(*k, 3, 4)).astype(np.float32)
  y = np.asarray(conv.conv_same(jnp.asarray(x), jnp.asarray(w), stride))
  kh, kw = k if k else (1, 1)
  ph, pw = pool.same_padding(size, kh, stride), pool.same_padding(size, kw, stride)
  xt = F.pad(torch.tensor(np.moveaxis(x, -1, 1)), (*pw, *ph))
  wt = torch.tensor(w.reshape(kh, kw, 3, 4).transpose(3, 2, 0, 1).copy())
  ref = np.moveaxis(F.conv2d(xt, wt, stride=stride).numpy(), 1, -1)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_batchnorm_training_matches_torch_batchnorm3d():
  rng = np.random.default_rng(3)
  x = rng.normal(2.0, 3.0, size=(2, 3, 4, 5, 6)).astype(np.float64)  # (B, T, H, W, C)
  scale, bias = rng.uniform(0.5, 1.5, 6), rng.normal(size=6)
  mean0, var0 = rng.normal(size=6), rng.uniform(0.5, 1.5, 6)
  ref = torch.nn.BatchNorm3d(6, eps=1e-3, momentum=0.01).double()
  with torch.no_grad():
    ref.weight.copy_(torch.tensor(scale))
    ref.bias.copy_(torch.tensor(bias))
    ref.running_mean.copy_(torch.tensor(mean0))
    ref.running_var.copy_(torch.tensor(var0))
  xt = torch.tensor(np.moveaxis(x, -1, 1))
  with jax.enable_x64(True):
    bn = layers.TorchBatchNorm(6, momentum=0.01, epsilon=1e-3, param_dtype=jnp.float64)
    variables = {'params': {'scale': jnp.asarray(scale), 'bias': jnp.asarray(bias)},
                 'batch_stats': {'mean': jnp.asarray(mean0), 'var': jnp.asarray(var0)}}
    y, mutated = bn.apply(variables, jnp.asarray(x), True, mutable=['batch_stats'])
    ref.train()
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(ref(xt).detach().numpy(), 1, -1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(mutated['batch_stats']['mean']), ref.running_mean.numpy(), rtol=1e-12)
    # the running variance takes the UNBIASED batch variance (n / (n - 1)), as torch does
    np.testing.assert_allclose(np.asarray(mutated['batch_stats']['var']), ref.running_var.numpy(), rtol=1e-12)
    biased = x.reshape(-1, 6).var(axis=0)
    assert not np.allclose(np.asarray(mutated['batch_stats']['var']), 0.99 * var0 + 0.01 * biased, rtol=1e-9)
    # evaluation normalises with the running statistics
    ref.eval()
    y_eval = bn.apply({'params': variables['params'], 'batch_stats': mutated['batch_stats']}, jnp.asarray(x), False)
    np.testing.assert_allclose(np.asarray(y_eval), np.moveaxis(ref(xt).detach().numpy(), 1, -1),
                               rtol=1e-10, atol=1e-10)


def test_fused_units_equal_separate_units_train_and_eval():
  """Three Unit3Ds run as one concatenated conv give what each gives alone (stats per channel)."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(4, 6, 6, 5)).astype(np.float32))
  block = layers.SpatialInception((3, 4, 5, 2, 3, 2))
  xs = x.reshape(2, 2, 6, 6, 5)
  variables = block.init(jax.random.PRNGKey(0), xs, False)
  for train in (False, True):
    y, _ = block.apply(variables, xs, train, mutable=['batch_stats'])
    unit = layers.Unit3D(3, ())
    alone, _ = unit.apply({'params': variables['params']['b0'], 'batch_stats': variables['batch_stats']['b0']},
                          x, train, mutable=['batch_stats'])
    np.testing.assert_allclose(np.asarray(y).reshape(4, 6, 6, -1)[..., :3], np.asarray(alone), rtol=1e-5, atol=1e-5)


def test_frp_pools_heatmap_until_no_larger_and_mixes():
  heat = jnp.arange(2 * 32 * 32, dtype=jnp.float32).reshape(2, 32, 32, 1)
  pooled = pool_heatmap_to(heat, 4)
  assert pooled.shape == (2, 4, 4, 1)
  np.testing.assert_array_equal(np.asarray(pooled), np.asarray(heat).reshape(2, 4, 8, 4, 8, 1).max(axis=(2, 4)))
  assert pool_heatmap_to(heat, 32).shape == heat.shape
  assert pool_heatmap_to(jnp.zeros((1, 12, 12, 1)), 5).shape == (1, 3, 3, 1)  # floor: 12 -> 6 -> 3
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  frp = FRP(w=4)
  variables = frp.init(jax.random.PRNGKey(0), x, pooled)
  np.testing.assert_array_equal(np.asarray(variables['params']['rpconv1d']['weight']), [[[1.0], [0.0]]])
  w = {'params': {'rpconv1d': {'weight': jnp.asarray([[[0.3], [-0.7]]])}}}
  out = frp.apply(w, x, pooled)
  np.testing.assert_allclose(np.asarray(out), np.asarray(0.3 * x - 0.7 * x * (1 + pooled)), rtol=1e-6)
  # a window w < 1 makes FRP the identity (the network then adds x to itself)
  assert np.array_equal(np.asarray(FRP(w=0).apply(w, x, None)), np.asarray(x))


def test_bn_relu_train_gradient_equals_autodiff_of_the_definition():
  """The closed-form backward against JAX differentiating mean/var/normalise/ReLU op by op,
  in float64, with cotangents on the output and on the returned moments."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    y = jnp.asarray(rng.normal(1.5, 2.0, size=(3, 4, 5, 6)))
    scale, bias = jnp.asarray(rng.uniform(-1.5, 1.5, 6)), jnp.asarray(rng.normal(size=6))
    eps = 1e-3

    def reference(y, scale, bias):
      mean = y.reshape(-1, 6).mean(axis=0)
      var = ((y - mean) ** 2).reshape(-1, 6).mean(axis=0)
      return jax.nn.relu((y - mean) / jnp.sqrt(var + eps) * scale + bias), mean, var

    ours, vjp = jax.vjp(lambda *a: batchnorm.bn_relu_train(*a, eps), y, scale, bias)
    ref, vjp_ref = jax.vjp(reference, y, scale, bias)
    for a, b in zip(ours, ref):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    assert (np.asarray(ours[0]) == 0).mean() > 0.2  # the ReLU mask is exercised
    cot = (jnp.asarray(rng.normal(size=y.shape)), jnp.asarray(rng.normal(size=6)), jnp.asarray(rng.normal(size=6)))
    for a, b in zip(vjp(cot), vjp_ref(cot)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('rows', [4800, 4100, 4098, 4097, 100])  # folds of 8, 4, 2, none, too few
def test_column_sum_equals_the_sum_over_rows(rows):
  with jax.enable_x64(True):
    z = np.random.default_rng(rows).normal(size=(rows // 4, 2, 2, 3)) if rows % 4 == 0 else \
        np.random.default_rng(rows).normal(size=(rows, 3))
    got = np.asarray(batchnorm.column_sum(jnp.asarray(z)))
  np.testing.assert_allclose(got, z.reshape(-1, 3).sum(0), rtol=1e-12)


def test_column_sum_of_many_float32_rows_stays_accurate():
  """The row fold shortens float32 accumulation: a plain matrix-vector sum of
  294912 squares drifts by ~1e-4 relative; folded it stays within 2e-5."""
  y = np.random.default_rng(0).normal(size=(294912, 8)).astype(np.float32)
  sq = y.astype(np.float64) ** 2
  got = np.asarray(jax.jit(lambda a: batchnorm.column_sum(jnp.square(a)))(jnp.asarray(y)))
  np.testing.assert_allclose(got, sq.sum(0), rtol=2e-5)


def _dot_precisions(fn, *args):
  """The `precision` of every dot_general in fn's jaxpr (nested jaxprs included)."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append(eqn.params['precision'])
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_column_sum_matmul_runs_at_highest_precision():
  """On GPU/TPU a float32 matmul at default precision runs as TF32/bfloat16 passes: the
  BatchNorm statistics must not. The CPU form is a matmul pinned to HIGHEST; the other
  backends' form is a plain reduction. Both give the same sums."""
  z = jnp.asarray(np.random.default_rng(1).normal(size=(4800, 3)).astype(np.float32))
  precisions = _dot_precisions(lambda a: batchnorm._column_sum(a, as_matmul=True), z)
  assert precisions, 'the CPU form of column_sum is expected to be a matmul'
  for p in precisions:
    assert p is not None and all(q == jax.lax.Precision.HIGHEST for q in p), p
  assert _dot_precisions(lambda a: batchnorm._column_sum(a, as_matmul=False), z) == []
  ref = np.asarray(z, np.float64).sum(0)
  for as_matmul in (True, False):
    got = np.asarray(jax.jit(lambda a: batchnorm._column_sum(a, as_matmul=as_matmul))(z))
    np.testing.assert_allclose(got, ref, rtol=2e-5)
  # the backward of the training BatchNorm goes through the same sums
  y = jnp.asarray(np.random.default_rng(2).normal(size=(64, 8)).astype(np.float32))
  grad = lambda a: jax.grad(lambda x: batchnorm.bn_relu_train(x, jnp.ones(8), jnp.zeros(8), 1e-3)[0].sum())(a)
  grad_precisions = _dot_precisions(grad, y)
  assert len(grad_precisions) >= 3  # the two moments and the backward's two sums
  for p in grad_precisions:
    assert p is not None and all(q == jax.lax.Precision.HIGHEST for q in p), p
