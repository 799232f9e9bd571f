"""Flax variables -> a state_dict in the original's layout, and a checkpoint the original loads.

    state_dict = variables_to_state_dict(variables, config)
    save_torch_checkpoint('model_best.pth.tar', state_dict, epoch=100, bestacc=90.2, config=config)

Keys come in the original's registration order (`torch_layout`), kernels are
transposed back to torch's (out, in, *kernel) with the size-1 kernel dims the
Flax side may have dropped, BatchNorm counters are added as int64. The file
loads into the original model with `load_state_dict(strict=True)`.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping

import flax
import ml_collections
import numpy as np

from rgbd_jax.convert import torch_layout
from rgbd_jax.convert.torch_import import flax_location


def kernel_to_torch(k: np.ndarray, kernel: tuple[int, ...] | None) -> np.ndarray:
  """Flax kernel (*k, in, out) (size-1 dims possibly dropped) -> torch (out, in, *kernel).

  `kernel` is the original's spatial kernel size; None for nn.Linear.
  """
  k = np.asarray(k)
  if kernel is None:
    if k.ndim != 2:
      raise ValueError(f'Linear kernel of shape {k.shape} is not 2-D')
    return np.ascontiguousarray(k.T)
  cin, cout = k.shape[-2:]
  full = (*kernel, cin, cout)
  if int(np.prod(full)) != k.size:
    raise ValueError(f'kernel of shape {k.shape} does not hold a {kernel} convolution')
  k = k.reshape(full)
  n = k.ndim
  return np.ascontiguousarray(np.transpose(k, (n - 1, n - 2) + tuple(range(n - 2))))


def variables_to_state_dict(variables: Mapping[str, Any], config: ml_collections.ConfigDict,
                            dtype: Any = np.float32, num_batches_tracked: int | Mapping[str, int] | None = 0
                            ) -> collections.OrderedDict:
  """The original's state_dict (numpy arrays, original order) for `variables` of `config`.

  `num_batches_tracked`: every BatchNorm counter's value (one count for all,
  e.g. the training steps taken, or a count per original key as a checkpoint
  of the original held them; None: 0). torch only reports it: the original's
  BatchNorms have a fixed momentum.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  flat = {k: v for k, v in flat.items() if k[0] in ('params', 'batch_stats')}
  used = set()
  out = collections.OrderedDict()
  for entry in torch_layout.original_entries(config):
    if entry.kind == 'count':
      count = (num_batches_tracked.get(entry.key, 0) if isinstance(num_batches_tracked, Mapping)
               else num_batches_tracked or 0)
      out[entry.key] = np.array(int(count), dtype=np.int64)
      continue
    flat_key, how = flax_location(entry.key, flat)
    if how == 'none':
      raise ValueError(f'the variables have no leaf for the original key {entry.key} '
                       f'(looked for {"/".join(flat_key)})')
    value = np.asarray(flat[flat_key])
    if entry.kind == 'conv':
      value = kernel_to_torch(value, entry.kernel)
    elif entry.kind == 'linear':
      value = kernel_to_torch(value, None)
    out[entry.key] = np.ascontiguousarray(value.astype(dtype))
    used.add(flat_key)
  extra = [('/'.join(k), np.shape(v)) for k, v in flat.items() if k not in used]
  if extra:
    raise ValueError(f'variables the original network has no tensor for (config {config.model.Network}, '
                     f'N={config.model.N}): {extra[:10]}')
  return out


def optimizer_state(config: ml_collections.ConfigDict, num_params: int) -> dict:
  """An `optimizer` entry the original's `--resume` loads: its optimiser over `num_params` tensors.

  Built by torch itself (`build_optim`'s optimiser over stand-in tensors), so its
  param_groups hold every field that torch version expects; the state (momentum
  buffers) is empty, as after `zero_grad` in a fresh run: resuming restarts momentum.
  """
  import torch  # pylint: disable=g-import-not-at-top
  c = config.common
  stand_ins = [torch.zeros(1) for _ in range(num_params)]
  if c.optim == 'SGD':
    opt = torch.optim.SGD(stand_ins, float(c.learning_rate), momentum=float(c.momentum),
                          weight_decay=float(c.weight_decay))
  elif c.optim == 'Adam':
    opt = torch.optim.Adam(stand_ins, lr=float(c.learning_rate))
  elif c.optim == 'AdamW':
    opt = torch.optim.AdamW(stand_ins, lr=float(c.learning_rate))
  else:
    raise ValueError(f"common.optim must be 'SGD', 'Adam' or 'AdamW', got {c.optim!r}")
  return opt.state_dict()


def save_torch_checkpoint(path: str, state_dict: Mapping[str, np.ndarray], *, epoch: int = 0,
                          bestacc: float = 0.0, config: ml_collections.ConfigDict | None = None) -> None:
  """Writes `{'model', 'optimizer', 'epoch', 'bestacc'}` with torch.save, as the original's training saves it.

  `epoch` and `bestacc` are the original's fields (epochs completed, best accuracy in percent);
  with `config` the file also holds an `optimizer` entry, so the original's `--resume` loads it.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('writing a .pth.tar needs torch (pip install torch, or pip install -r '
                      'requirements-torch.txt); reading one does not') from e
  model = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())
  out = {'model': model, 'epoch': int(epoch), 'bestacc': float(bestacc)}
  if config is not None:
    params = [e for e in torch_layout.original_entries(config) if e.kind not in ('stat', 'count')]
    out['optimizer'] = optimizer_state(config, len(params))
  torch.save(out, path)
