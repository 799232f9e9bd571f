"""XLA options for compiling the networks."""

from __future__ import annotations

import jax


def compiler_options(backend: str | None = None) -> dict[str, str]:
  """Options to pass as `jax.jit(..., compiler_options=...)` for these networks.

  On CPU, XLA routes convolutions and dots to YNNPACK by default; for this
  network's shapes its convolutions with <= 64 output channels run on one
  thread and its kernel-gradient convolutions are ~4x slower than XLA's Eigen
  path, so on CPU we turn the YNNPACK fusions off (a per-compilation option,
  nothing global). Other backends: no options.
  """
  if (backend or jax.default_backend()) == 'cpu':
    return {'xla_cpu_experimental_ynn_fusion_type': ''}
  return {}
