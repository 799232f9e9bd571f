r"""Runs the port on an original checkpoint and an input batch, for comparison with the original.

    python scripts/crosscheck.py --checkpoint model_best.pth.tar --inputs in.npz --out out.npz \
        --config configs/ntu.py [--epoch 99] [--x64] [--compare ref.npz]

Inputs and outputs are `.npz` files in the original's NCTHW layout so the same
batch can be dumped from, and compared with, the PyTorch code:

* unimodal: `video` (B, 3, T, H, W) and `heatmap` (B, 1, T, H, W);
* FusionNet: `rgb`, `rgb_heatmap`, `depth`, `depth_heatmap` and `target` (B,);
* the journal's DSNV2: `video` alone; UMDRFusion: `rgb`, `depth` (and `target`), with the
  fusion network's checkpoint as --checkpoint and its streams' as --config.model.rgb_checkpoint /
  --config.model.depth_checkpoint (the original's three checkpoints).

What is computed is picked by a mode from `MODES` ('forward': evaluation-mode
outputs and, for the fusion network, its losses). A mode is a function
`(model, variables, inputs, *, config, epoch, **options) -> {name: array}`
with NTHWC jax inputs; adding one needs nothing else here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rgbd_jax.convert import umdr_import
from rgbd_jax.models import build
from rgbd_jax.tools import step_check

# Outputs compared at the float32 tolerance (the rest are debugging intermediates).
HEADLINE = ('logits', 'xs', 'xm', 'xl', 'fusion_logits', 'logits_rgb', 'logits_depth',
            'fusion_logits_rgb', 'fusion_logits_depth', 'combined')
TOLERANCE_X64 = 1e-6
TOLERANCE_F32 = 1e-3


def is_headline(name: str) -> bool:
  return name in HEADLINE or name.endswith('_loss')


def read_inputs(path: str, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The model inputs of an `.npz` (NCTHW), checked; errors name the file and key."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'inputs file not found: {path}')
  with np.load(path) as z:
    data = {k: z[k] for k in z.files}
  kind = build.network(config)
  spec = dict(kind.inputs)
  missing = [k for k in spec if k not in data]
  if missing:
    raise ValueError(f'{path}: missing input key(s) {missing} for {kind.name} '
                     f'(expected {sorted(spec)} and optionally target, found {sorted(data)})')
  out = {}
  batch = None
  t = config.model.sample_duration
  for name, channels in spec.items():
    x = data[name]
    if x.ndim != 5 or x.shape[1] != channels or x.shape[2] != t:
      raise ValueError(f'{path}: {name} must be (B, {channels}, T={t}, H, W) (NCTHW), got {x.shape}')
    if batch is None:
      batch, size = x.shape[0], x.shape[3:]
    if x.shape[0] != batch or x.shape[3:] != size:
      raise ValueError(f'{path}: {name} has shape {x.shape}, inconsistent with batch {batch} '
                       f'and size {size} of the other inputs')
    out[name] = x
  if 'target' in data:
    target = data['target']
    if target.shape != (batch,) or not np.issubdtype(target.dtype, np.integer):
      raise ValueError(f'{path}: target must be ({batch},) integers, got {target.shape} {target.dtype}')
    out['target'] = target
  return out


def to_model_inputs(inputs: Mapping[str, np.ndarray], dtype: Any) -> dict[str, jax.Array]:
  """NCTHW numpy -> NTHWC jax arrays of `dtype` (labels stay integers)."""
  out = {}
  for k, v in inputs.items():
    if v.ndim == 5:
      out[k] = jnp.asarray(np.transpose(v, (0, 2, 3, 4, 1)).astype(dtype))
    else:
      out[k] = jnp.asarray(v.astype(np.int32))
  return out


def forward(model, variables, inputs: Mapping[str, jax.Array], *, config: ml_collections.ConfigDict,
            epoch: int) -> dict[str, jax.Array]:
  """Evaluation-mode outputs; with `target` in the inputs also the losses (`<term>_loss`).

  The loss terms are the network's training objective on evaluation-mode
  outputs (the fusion network's ce/bce/mse/distillation, as the fixtures store them).
  """
  kind = build.network(config)
  temp = build.sharpness_temperature(config, epoch)

  def run(v, args, target, temp):
    out = dict(model.apply(v, *args, train=False, temp=temp))
    if target is not None:
      terms = kind.losses(config, out, target, 1.0)
      out.update({f'{k}_loss': t for k, t in terms.items() if k != 'total'})
    return out
  args = [inputs[k] for k in kind.input_keys]
  return dict(jax.jit(run)(variables, args, inputs.get('target'), temp))


# name -> mode function. 'train_step': one training step (rgbd_jax.tools.step_check).
MODES: dict[str, Callable[..., dict[str, jax.Array]]] = {
    'forward': forward, 'train_step': step_check.crosscheck_mode}


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
  """||ours - ref|| / ||ref|| (the absolute error where ref is all zeros)."""
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  if ours.shape != ref.shape:
    return float('inf')
  norm = np.linalg.norm(ref)
  diff = np.linalg.norm(ours - ref)
  return float(diff / norm) if norm > 0 else float(diff)


def compare(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], x64: bool
            ) -> tuple[dict[str, float], list[str]]:
  """(relative error per common key, keys beyond tolerance).

  `ref` keys may carry the golden fixtures' 'expected/' prefix. Tolerance:
  1e-6 on every key in float64; 1e-3 on logits and losses in float32.
  """
  ref = {k[len('expected/'):] if k.startswith('expected/') else k: v for k, v in ref.items()}
  errors, failed = {}, []
  for k in sorted(set(ours) & set(ref)):
    errors[k] = relative_error(ours[k], ref[k])
    if x64 and errors[k] > TOLERANCE_X64:
      failed.append(k)
    elif not x64 and is_headline(k) and errors[k] > TOLERANCE_F32:
      failed.append(k)
  return errors, failed


def prepare(checkpoint: str, config: ml_collections.ConfigDict, x64: bool):
  """(config, model, variables) for a checkpoint; call inside `precision(x64)`."""
  config = config.copy_and_resolve_references()
  if x64:
    config.model.dtype = 'float64'
  # the journal fusion's own checkpoint brings its streams from model.rgb_checkpoint / depth_checkpoint,
  # each run at the temperature of its own file's epoch
  config, variables, info = umdr_import.load_checkpoint(checkpoint, config)
  return config, build.build_model(config, info.get('stream_epochs')), variables


@contextlib.contextmanager
def precision(x64: bool):
  """Context for a parity run: float64 when `x64`, and full-precision matmuls and convolutions.

  'highest' keeps GPUs/TPUs from using TF32/bfloat16 passes for float32
  products, which alone would cost ~1e-3 relative error (no effect on CPU).
  """
  with contextlib.ExitStack() as stack:
    if x64:
      stack.enter_context(jax.enable_x64(True))
    stack.enter_context(jax.default_matmul_precision('highest'))
    yield


def run_mode(mode: str, config, model, variables, inputs: Mapping[str, np.ndarray], *, epoch: int,
             x64: bool, **options) -> dict[str, np.ndarray]:
  """Runs a mode on NCTHW numpy inputs; numpy outputs."""
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; known: {sorted(MODES)}')
  dtype = np.float64 if x64 else np.float32
  out = MODES[mode](model, variables, to_model_inputs(inputs, dtype), config=config, epoch=epoch,
                    **options)
  return {k: np.asarray(v) for k, v in out.items()}


def main(config: ml_collections.ConfigDict, checkpoint: str, inputs_path: str, out_path: str, *,
         epoch: int = 0, x64: bool = False, compare_path: str = '', mode: str = 'forward',
         **options) -> int:
  """The crosscheck command; returns the process exit code (1: beyond tolerance)."""
  with precision(x64):
    config, model, variables = prepare(checkpoint, config, x64)
    inputs = read_inputs(inputs_path, config)
    out = run_mode(mode, config, model, variables, inputs, epoch=epoch, x64=x64, **options)
  # Interchange files hold standard numpy dtypes: a bfloat16 run (ml_dtypes, no numpy type of its
  # own) would be stored as raw |V2 bytes that numpy elsewhere cannot read as numbers; float32
  # holds every bfloat16 value exactly.
  out = {k: v.astype(np.float32) if v.dtype == jnp.bfloat16 else v for k, v in out.items()}
  np.savez(out_path, **out)
  logging.info('wrote %d outputs to %s', len(out), out_path)
  if not compare_path:
    return 0
  if not os.path.exists(compare_path):
    raise FileNotFoundError(f'reference file not found: {compare_path}')
  with np.load(compare_path) as z:
    ref = {k: z[k] for k in z.files}
  errors, failed = compare(out, ref, x64)
  if not errors:
    raise ValueError(f'{compare_path} shares no key with the outputs ({sorted(out)})')
  tol = TOLERANCE_X64 if x64 else TOLERANCE_F32
  for k, e in errors.items():
    flag = 'FAIL' if k in failed else ('ok' if x64 or is_headline(k) else 'info')
    print(f'{k:32s} rel. L2 error {e:.3e}  {flag}')
  print(f'{len(errors)} compared, {len(failed)} beyond tolerance {tol:g}'
        + ('' if x64 else ' (float32: logits and losses only)'))
  return 1 if failed else 0
