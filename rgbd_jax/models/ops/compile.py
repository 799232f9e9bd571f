"""XLA options for compiling the networks' programs: the one source of them."""

from __future__ import annotations

from typing import Any

import jax


def compiler_options(opt_level: int = -1, backend: str | None = None) -> dict[str, Any]:
  """Options to pass as `jax.jit(..., compiler_options=...)` for the steps that run these networks.

  On CPU, XLA routes convolutions and dots to YNNPACK by default; for this
  network's shapes its convolutions with <= 64 output channels run on one
  thread and its kernel-gradient convolutions are ~4x slower than XLA's Eigen
  path, so on CPU we turn the YNNPACK fusions off (a per-compilation option,
  nothing global). Its elementwise loops may use 512-bit vectors where the
  CPU has them (AVX-512; a preference, harmless elsewhere): the training step
  measured 3.5-5.5% faster on the 2-core AVX-512 machine. LLVM's expensive
  passes cost about 1/3 of a training step's compile and gained nothing at run
  time here. Other backends: XLA's defaults.

  `opt_level` >= 0 sets XLA's backend optimisation level (0: fastest compile,
  slower code: for programs that run once or briefly).
  """
  options: dict[str, Any] = {}
  if (backend or jax.default_backend()) == 'cpu':
    options.update({'xla_cpu_experimental_ynn_fusion_type': '', 'xla_cpu_prefer_vector_width': 512,
                    'xla_llvm_disable_expensive_passes': True})
  if opt_level >= 0:
    options['xla_backend_optimization_level'] = int(opt_level)
  return options
