"""Convolutions with TF-"SAME" padding, each rank as the kernel it runs fastest as."""

from __future__ import annotations

import jax
from jax import lax

from rgbd_jax.models.ops.pool import same_padding


def conv_same(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """Convolution with TF-SAME padding; the kernel's rank picks the kind.

  kernel (in, out): 1x1 conv (a matmul over the channel axis of any x);
  kernel (kh, kw, in, out): 2-D conv over frames x (N, H, W, C);
  kernel (kt, in, out): 1-D conv over tokens x (B, n, C).
  """
  if kernel.ndim == 2:
    if stride != 1:
      raise ValueError('a 1x1 unit with stride is not used by the network')
    # as a 2-D matmul: with the leading axes kept, XLA transposes the output
    # gradient into a copy for the kernel gradient (2x slower fwd+bwd)
    y = x.reshape(-1, x.shape[-1]) @ kernel
    return y.reshape(*x.shape[:-1], kernel.shape[-1])
  if kernel.ndim == 4:
    kh, kw = kernel.shape[:2]
    pads = [same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride)]
    return lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if kernel.ndim == 3:
    pads = [same_padding(x.shape[1], kernel.shape[0], stride)]
    return lax.conv_general_dilated(x, kernel, (stride,), pads, dimension_numbers=('NWC', 'WIO', 'NWC'))
  raise ValueError(f'unsupported kernel rank {kernel.ndim}')
