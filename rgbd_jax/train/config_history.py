"""The record of what a workdir was trained with, and which config changes a resume may make.

A fresh run writes `config.json` and the first line of `config_history.jsonl`.
A resumed run compares its config with `config.json`:

* a structural difference (the network, its widths or classes, the frames it
  takes, the optimiser's state, the data order) cannot continue the saved
  state: the run stops before any step and lists each differing key (old ->
  new), with the two ways forward (a new workdir, or fine-tuning from this one);
* any other difference (epochs, learning rate, report frequency, workers,
  augmentation, ...) is applied, logged key by key, and appended to the history
  with the step it took effect at; `config.json` then holds the config in use
  and the history every config the run had.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

import jax
import ml_collections

from rgbd_jax import checkpoint
from rgbd_jax import configs

HISTORY_FILE = 'config_history.jsonl'

# Keys whose change makes the saved state or the data position meaningless.
STRUCTURAL = frozenset({
    'model.Network', 'model.N', 'model.SEHeads', 'model.width', 'model.dim', 'model.heads',
    'model.dim_head', 'model.mlp_dim', 'model.recoupling', 'model.frp', 'model.sample_duration',
    'dataset.low_frames', 'dataset.media_frames', 'dataset.high_frames', 'dataset.type',
    'common.optim', 'common.batch_size', 'common.seed', 'common.dataset', 'common.accumulation_steps',
    # derived: compared through their resolved values below
    'model.num_classes', 'model.rcm_hidden',
})


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  values = json.loads(configs.to_json(config))
  values.pop('inert', None)
  out = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, f'{prefix}{k}.')
      else:
        out[f'{prefix}{k}'] = v
  walk(values, '')
  out['model.num_classes'] = configs.num_classes(config)
  out['model.rcm_hidden'] = configs.rcm_hidden(config)
  return out


def differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old, new)} of every setting that differs (resolved class count and RCM width)."""
  a, b = _flat(old), _flat(new)
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _append(workdir: str, entry: dict[str, Any]) -> None:
  with open(os.path.join(workdir, HISTORY_FILE), 'a') as f:
    f.write(json.dumps(entry) + '\n')


def record(workdir: str, config: ml_collections.ConfigDict, *, resuming: bool, step: int) -> None:
  """Checks a resume against the workdir's config (see the module docstring) and keeps the record.

  Raises ValueError listing the structural differences; only process 0 writes.
  """
  now = datetime.datetime.now().isoformat(timespec='seconds')
  saved_path = os.path.join(workdir, checkpoint.CONFIG_FILE)
  if not resuming or not os.path.exists(saved_path):
    if jax.process_index() == 0:
      checkpoint.write_config(workdir, config)
      _append(workdir, {'time': now, 'step': step, 'event': 'start',
                        'config': json.loads(configs.to_json(config))})
    return
  saved = checkpoint.read_config(workdir)
  changed = differences(saved, config)
  structural = {k: v for k, v in changed.items() if k in STRUCTURAL}
  if structural:
    lines = '\n'.join(f'  {k}: {old!r} -> {new!r}' for k, (old, new) in structural.items())
    raise ValueError(
        f'{workdir} holds a run whose saved state does not fit this config; these settings differ '
        f'(saved -> now):\n{lines}\nTo train this config, give a new --workdir; to start it from '
        f'these weights, also set --config.model.pretrained={workdir} (fine-tuning: the heads are '
        f're-initialised where they no longer fit). To continue the saved run, drop these overrides.')
  if not changed:
    return
  for k, (old, new) in changed.items():
    logging.warning('resume with a changed setting: %s %r -> %r (from step %d)', k, old, new, step)
  if jax.process_index() == 0:
    _append(workdir, {'time': now, 'step': step, 'event': 'resume with changes',
                      'changes': {k: [old, new] for k, (old, new) in changed.items()},
                      'config': json.loads(configs.to_json(config))})
    checkpoint.write_config(workdir, config)
