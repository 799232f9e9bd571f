"""XLA options for compiling the networks."""

from __future__ import annotations

import jax


def compiler_options(backend: str | None = None) -> dict[str, str | int]:
  """Options to pass as `jax.jit(..., compiler_options=...)` for these networks.

  On CPU, XLA routes convolutions and dots to YNNPACK by default; for this
  network's shapes its convolutions with <= 64 output channels run on one
  thread and its kernel-gradient convolutions are ~4x slower than XLA's Eigen
  path, so on CPU we turn the YNNPACK fusions off (a per-compilation option,
  nothing global). Its elementwise loops may use 512-bit vectors where the
  CPU has them (AVX-512; a preference, harmless elsewhere): the training step
  measured 3.5-5.5% faster on the 2-core AVX-512 machine. Other backends: no options.
  """
  if (backend or jax.default_backend()) == 'cpu':
    return {'xla_cpu_experimental_ynn_fusion_type': '', 'xla_cpu_prefer_vector_width': 512}
  return {}
