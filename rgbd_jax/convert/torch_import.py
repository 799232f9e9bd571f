"""Original PyTorch checkpoints -> Flax variables, driven by the target variable tree.

    config, variables = load_torch_checkpoint('model_best.pth.tar', config)

The file is read without running pickled code (`torch_pickle`), the
architecture is read off the tensors and overrides the config where they
differ (one log line each), and every tensor is placed at the Flax leaf the
naming contract gives it, with its shape checked against the model's own
`eval_shape`. For fine-tuning, `load_pretrained` loads what fits into
existing variables and reports the rest, as the original's
`load_pretrained_checkpoint` does.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rgbd_jax import checkpoint
from rgbd_jax.convert import torch_layout
from rgbd_jax.convert import torch_pickle
from rgbd_jax.models import build

FlatKey = tuple[str, ...]  # (collection, *module path, leaf)

# Keys the original's fine-tuning loader never copies: the classification layers.
HEAD_PATTERN = re.compile(r'(^|\.)(mlp_head_(small|media|large)|classifier[12])\.1\.(weight|bias)$'
                          r'|(^|\.)fusion_model\.efc\.weight$')


# ---------------------------------------------------------------- reading

def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The state_dict of a checkpoint file (prefix `module.` removed) and its other entries.

  Accepts the original's `{'model': state_dict, 'optimizer', 'epoch', 'bestacc'}`
  and a bare state_dict. An optimizer entry that names globals outside the
  reader's whitelist is dropped with a warning (its values are never used
  here); such a global anywhere else is an error naming it.
  """
  obj = torch_pickle.read_checkpoint(path)
  meta: dict[str, Any] = {}
  if isinstance(obj, dict) and isinstance(obj.get('model'), dict):
    state_dict = obj['model']
    for k, v in obj.items():
      if k == 'model':
        continue
      refused = torch_pickle.contains_refused(v)
      if refused and k == 'optimizer':
        logging.warning('%s: optimizer state skipped: it names globals this reader does not load (%s)',
                        path, ', '.join(refused))
        continue
      if refused:
        raise ValueError(f'{path}: entry {k!r} names globals refused by the safe reader: '
                         f'{", ".join(refused)}')
      meta[k] = v
  elif isinstance(obj, dict):
    state_dict = obj
  else:
    raise ValueError(f'{path}: expected a dict (state_dict or {{"model": state_dict, ...}}), '
                     f'found {type(obj).__name__}')
  refused = torch_pickle.contains_refused(state_dict)
  if refused:
    raise ValueError(f'{path}: the weights name globals refused by the safe reader: {", ".join(refused)} '
                     '(a checkpoint of the original holds only tensors)')
  bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise ValueError(f'{path}: state_dict entries that are not tensors: {bad[:5]}')
  return torch_layout.strip_module_prefix(state_dict), meta


# ---------------------------------------------------------------- mapping

def flax_location(torch_key: str, target: Mapping[FlatKey, Any]) -> tuple[FlatKey | None, str]:
  """Where a torch tensor goes: (flat Flax key, how) with how in kernel|copy|ignore|none.

  'none' means the target has no leaf for it (an unexpected key).
  """
  *path, leaf = torch_key.split('.')
  path = tuple(path)
  if leaf == 'num_batches_tracked':
    return None, 'ignore'
  if leaf == 'weight':
    for name, how in (('kernel', 'kernel'), ('scale', 'copy'), ('weight', 'copy')):
      if ('params', *path, name) in target:
        return ('params', *path, name), how
    return ('params', *path, 'kernel'), 'none'
  if leaf in ('running_mean', 'running_var'):
    key = ('batch_stats', *path, 'mean' if leaf == 'running_mean' else 'var')
  else:
    key = ('params', *path, leaf)
  return key, ('copy' if key in target else 'none')


def torch_key_of(flat_key: FlatKey) -> str:
  """The original's key of a Flax leaf (inverse of `flax_location`)."""
  collection, *path, leaf = flat_key
  if collection == 'batch_stats':
    leaf = {'mean': 'running_mean', 'var': 'running_var'}.get(leaf, leaf)
  elif leaf in ('kernel', 'scale'):
    leaf = 'weight'
  return '.'.join((*path, leaf))


def kernel_from_torch(w: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray | None:
  """torch (out, in, *k) -> Flax (*k, in, out), size-1 kernel dims dropped to fit; None if it cannot fit."""
  if w.ndim < 2:
    return None
  moved = np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))
  if moved.shape == tuple(target_shape):
    return moved
  squeeze = lambda s: tuple(d for d in s if d != 1)
  if squeeze(moved.shape) == squeeze(target_shape) and moved.shape[-2:] == tuple(target_shape)[-2:]:
    return moved.reshape(target_shape)
  return None


def _path(flat_key: FlatKey) -> str:
  return f"{flat_key[0]}/{'/'.join(flat_key[1:])}"


def convert_tensor(key: str, value: np.ndarray, flat_key: FlatKey, how: str,
                   shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
  """(the value placed at the Flax leaf, '') or (None, what is wrong)."""
  value = np.asarray(value)
  if how == 'kernel':
    out = kernel_from_torch(value, shape)
  else:
    out = value if value.shape == tuple(shape) else None
  if out is None:
    return None, (f'torch {key} of shape {tuple(value.shape)} does not fit Flax {_path(flat_key)} of shape '
                  f'{tuple(shape)}' + (' (as a transposed kernel)' if how == 'kernel' else ''))
  return out, ''


@dataclasses.dataclass
class LoadReport:
  """What a partial load did, by torch key / Flax path."""
  loaded: list[str] = dataclasses.field(default_factory=list)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # torch key -> why
  kept_init: list[str] = dataclasses.field(default_factory=list)     # Flax paths left at their init

  def summary(self) -> str:
    lines = [f'loaded {len(self.loaded)} tensors; skipped {len(self.skipped)}; '
             f'{len(self.kept_init)} variables keep their initial values']
    lines += [f'  skipped {k}: {why}' for k, why in self.skipped.items()]
    lines += [f'  kept init: {p}' for p in self.kept_init]
    return '\n'.join(lines)


def _cast(x: np.ndarray, dtype: Any) -> jax.Array:
  dtype = np.dtype(dtype)
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError('float64 variables need jax_enable_x64 (e.g. `with jax.experimental.enable_x64():`)')
  return jnp.asarray(np.asarray(x).astype(dtype))


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], target: Mapping[str, Any],
                            dtype: Any = None) -> dict:
  """All of `state_dict` placed into a tree shaped like `target` (strict: every leaf, no extra key).

  `dtype`: of the floating-point leaves; default the target's own dtypes.
  """
  flat_target = flax.traverse_util.flatten_dict(flax.core.unfreeze(target))
  out: dict[FlatKey, Any] = {}
  problems: list[str] = []
  misfit: set[FlatKey] = set()
  for key, value in state_dict.items():
    flat_key, how = flax_location(key, flat_target)
    if how == 'ignore':
      continue
    if how == 'none':
      problems.append(f'unexpected torch key {key} {tuple(np.shape(value))}: the model has no Flax '
                      f'variable {_path(flat_key)}')
      continue
    leaf = flat_target[flat_key]
    placed, why = convert_tensor(key, value, flat_key, how, leaf.shape)
    if placed is None:
      problems.append(why)
      misfit.add(flat_key)
      continue
    out[flat_key] = _cast(placed, dtype or leaf.dtype)
  for flat_key, leaf in flat_target.items():
    if flat_key not in out and flat_key not in misfit:
      problems.append(f'missing torch key {torch_key_of(flat_key)} for Flax {_path(flat_key)} '
                      f'of shape {tuple(leaf.shape)}')
  if problems:
    head = f'{len(problems)} problem(s) mapping the checkpoint onto the model:\n  '
    raise ValueError(head + '\n  '.join(problems[:40]) + ('\n  ...' if len(problems) > 40 else ''))
  return flax.traverse_util.unflatten_dict(out)


def load_torch_checkpoint(path: str, config: ml_collections.ConfigDict, dtype: Any = None
                          ) -> tuple[ml_collections.ConfigDict, dict]:
  """(config with the checkpoint's architecture, variables {'params', 'batch_stats'}).

  dtype: of the variables; default float64 when `config.model.dtype` is
  'float64' (needs jax_enable_x64), else float32.
  """
  config, variables, _ = load_torch_checkpoint_with_info(path, config, dtype)
  return config, variables


def load_torch_checkpoint_with_info(path: str, config: ml_collections.ConfigDict, dtype: Any = None
                                    ) -> tuple[ml_collections.ConfigDict, dict, dict[str, Any]]:
  """`load_torch_checkpoint` and what the file says of the weights (`checkpoint.load_info`'s keys)."""
  state_dict, meta = read_state_dict(path)
  return from_state_dict(state_dict, meta, config, dtype, path)


def from_state_dict(state_dict: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                    config: ml_collections.ConfigDict, dtype: Any = None, where: str = 'checkpoint'
                    ) -> tuple[ml_collections.ConfigDict, dict, dict[str, Any]]:
  """(config with the architecture of `state_dict`, its variables, info) of a read checkpoint."""
  found = torch_layout.infer_architecture(state_dict)
  logging.info('%s: architecture read from the tensors: %s', where,
               ', '.join(f'{k}={v}' for k, v in found.items()))
  config = torch_layout.apply_architecture(config, found)
  info = checkpoint_info(state_dict, meta)
  logging.info('%s: %s network, %d tensors%s', where, config.model.Network, len(state_dict),
               ''.join(f', {k} {info[k]}' for k in ('trained_epoch', 'best_top1') if info[k] is not None))
  target = build.variable_shapes(config)
  variables = state_dict_to_variables(state_dict, target, dtype or np.dtype(build.param_dtype(config)))
  return config, variables, info


def checkpoint_info(state_dict: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> dict[str, Any]:
  """trained_epoch, best_top1, num_batches_tracked of an original checkpoint (None where absent)."""
  counts = {k: int(np.asarray(v)) for k, v in state_dict.items() if k.endswith('num_batches_tracked')}
  return {'trained_epoch': checkpoint.from_torch_epoch(meta['epoch']) if 'epoch' in meta else None,
          'best_top1': float(meta['bestacc']) / 100.0 if 'bestacc' in meta else None,
          'steps': None, 'num_batches_tracked': counts or None}


def load_pretrained(source: str | Mapping[str, np.ndarray], variables: Mapping[str, Any], *,
                    prefix: str = '', skip_heads: bool = True) -> tuple[dict, LoadReport]:
  """Loads what fits of a checkpoint into existing `variables`, for fine-tuning.

  As the original's `load_pretrained_checkpoint`: tensors whose key or shape
  does not match are skipped, and so are the classification layers when
  `skip_heads`; everything not loaded keeps its value in `variables`.
  `prefix` (e.g. 'Modalit_rgb.') places a unimodal checkpoint inside a fusion
  network. `source` is a file or a state_dict.
  """
  if isinstance(source, str):
    state_dict, _ = read_state_dict(source)
  else:
    state_dict = torch_layout.strip_module_prefix(source)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  report = LoadReport()
  done: set[FlatKey] = set()
  for key, value in state_dict.items():
    full = prefix + key
    flat_key, how = flax_location(full, flat)
    if how == 'ignore':
      continue
    if skip_heads and HEAD_PATTERN.search(full):
      report.skipped[key] = 'classification layer'
      continue
    if how == 'none':
      report.skipped[key] = f'no Flax variable {_path(flat_key)}'
      continue
    leaf = flat[flat_key]
    placed, why = convert_tensor(key, value, flat_key, how, leaf.shape)
    if placed is None:
      report.skipped[key] = why
      continue
    flat[flat_key] = jnp.asarray(placed.astype(leaf.dtype))
    done.add(flat_key)
    report.loaded.append(key)
  report.kept_init = [_path(k) for k in flat if k not in done]
  logging.info('pretrained weights: %s', report.summary())
  return flax.traverse_util.unflatten_dict(flat), report
