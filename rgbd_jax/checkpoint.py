"""Orbax checkpoints: model variables (converted or trained) and training runs.

Two layouts, both written by Orbax, which saves into a temporary directory and
renames it into place when complete, so a crash mid-save leaves the previous
checkpoint intact and no half-written one behind:

* a variables directory (`save_variables`), used for converted PyTorch weights:

      <dir>/config.json      the resolved config the variables belong to
      <dir>/variables/       Orbax tree {'params': ..., 'batch_stats': ...}

      <dir>/info.json        what the weights are: trained_epoch, best_top1, num_batches_tracked

* a training workdir (`TrainCheckpoints`):

      <workdir>/config.json
      <workdir>/checkpoints/<step>/{state,data,meta}

  `state` is the whole train state (params, batch_stats, opt_state, step, rng),
  `data` the input iterator position of every process, `meta` a small JSON
  (epoch, step in epoch, best top-1, ...).

`load_variables(path)` reads either layout, `load_info(path)` what is known of the weights.

The epoch convention, everywhere (logs, metrics.jsonl, evaluate, convert, export):
"epoch E" is the 0-based epoch whose training steps produced the weights; its
sharpness temperature is the one to evaluate them with. The original's
`.pth.tar` holds E + 1 in its `epoch` field (tools/train.py saves `epoch + 1`,
the epochs completed) and its `bestacc` in percent.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import grain
import orbax.checkpoint as ocp
from etils import epath

from rgbd_jax import configs

CONFIG_FILE = 'config.json'
VARIABLES_ITEM = 'variables'
CHECKPOINTS_DIR = 'checkpoints'
COLLECTIONS = ('params', 'batch_stats')


class _OrbaxInfoFilter(logging.Filter):
  """Drops Orbax's per-save INFO chatter (dozens of lines per checkpoint); keeps its warnings.

  Also drops its warning that a save carries no metrics: mid-epoch saves have
  none by design (the best-top-1 policy ignores them).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if f'{os.sep}orbax{os.sep}' not in record.pathname:
      return True
    return record.levelno >= logging.WARNING and 'did not provide metrics' not in record.getMessage()


def quiet_orbax_logs() -> None:
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxInfoFilter())


INFO_FILE = 'info.json'


# ------------------------------------------------------------ epochs
def to_torch_epoch(trained_epoch: int) -> int:
  """The original's checkpoint `epoch` field for weights trained through epoch E: E + 1."""
  return int(trained_epoch) + 1


def from_torch_epoch(field: int) -> int:
  """The epoch E whose training produced the weights of an original checkpoint with `epoch` = field."""
  return int(field) - 1


# ----------------------------------------------------------------- configs
def write_config(directory: str | os.PathLike, config: ml_collections.ConfigDict):
  """Writes `<directory>/config.json` atomically (only process 0 writes)."""
  if jax.process_index() != 0:
    return
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / (CONFIG_FILE + '.tmp')
  tmp.write_text(configs.to_json(config))
  os.replace(os.fspath(tmp), os.fspath(directory / CONFIG_FILE))


def read_config(directory: str | os.PathLike) -> ml_collections.ConfigDict:
  path = epath.Path(directory) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f'{path}: no config.json (is {directory} a checkpoint or workdir?)')
  return configs.from_json(path.read_text(), os.fspath(path))


# --------------------------------------------------- variables directories
def save_variables(directory: str | os.PathLike, variables: dict[str, Any],
                   config: ml_collections.ConfigDict, info: dict[str, Any] | None = None) -> None:
  """Saves {'params', 'batch_stats'} and the config as an Orbax checkpoint directory.

  `directory` must not hold a previous `variables` item (Orbax refuses to
  overwrite); the config is written beside it, and `info` (trained_epoch,
  best_top1, num_batches_tracked: what the weights' source said) as info.json.
  """
  directory = epath.Path(os.path.abspath(os.fspath(directory)))
  unknown = set(variables) - set(COLLECTIONS)
  if unknown or 'params' not in variables:
    raise ValueError(f'save_variables: expected collections {COLLECTIONS}, got {sorted(variables)}')
  tree = {k: variables[k] for k in COLLECTIONS if k in variables}
  tree.setdefault('batch_stats', {})
  directory.mkdir(parents=True, exist_ok=True)
  target = directory / VARIABLES_ITEM
  if target.exists():
    raise FileExistsError(f'{target} exists already; choose a new directory')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, tree)
  write_config(directory, config)
  if info is not None and jax.process_index() == 0:
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
  logging.info('saved variables to %s', directory)


def _restore_tree(path: epath.Path) -> Any:
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)


def load_variables(path: str | os.PathLike, which: str = 'best'
                   ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Reads (config, {'params', 'batch_stats'}) from a variables dir or a training workdir.

  Args:
    path: a directory written by `save_variables`, or a training workdir (its
      `which` checkpoint is read: 'best' or 'latest').
    which: for workdirs, 'best' (default) or 'latest'.
  """
  path = epath.Path(os.path.abspath(os.fspath(path)))
  if not path.exists():
    raise FileNotFoundError(f'checkpoint not found: {path}')
  if (path / VARIABLES_ITEM).exists():
    config = read_config(path)
    tree = _restore_tree(path / VARIABLES_ITEM)
    return config, {'params': tree['params'], 'batch_stats': tree.get('batch_stats', {}) or {}}
  if (path / CHECKPOINTS_DIR).exists():
    config = read_config(path)
    ckpts = TrainCheckpoints(path)
    try:
      state, meta = ckpts.restore_state_tree(which)
    finally:
      ckpts.close()
    logging.info('loaded %s checkpoint of %s: step %d, epoch %s', which, path,
                 meta['step'], meta.get('epoch'))
    return config, {'params': state['params'], 'batch_stats': state['batch_stats']}
  raise ValueError(
      f'{path} is neither a variables checkpoint (no {VARIABLES_ITEM}/) nor a training '
      f'workdir (no {CHECKPOINTS_DIR}/)')


def load_info(path: str | os.PathLike, which: str = 'best') -> dict[str, Any]:
  """What is known of the weights `load_variables(path, which)` reads.

  Keys (None where unknown): trained_epoch (the epoch convention above),
  best_top1 (a fraction), steps (training steps taken), num_batches_tracked
  ({original BatchNorm key: count} or one count for all).
  """
  path = epath.Path(os.path.abspath(os.fspath(path)))
  info = {'trained_epoch': None, 'best_top1': None, 'steps': None, 'num_batches_tracked': None}
  if (path / VARIABLES_ITEM).exists():
    if (path / INFO_FILE).exists():
      info.update(json.loads((path / INFO_FILE).read_text()))
    return info
  ckpts = TrainCheckpoints(path)
  try:
    meta = ckpts.read_meta(which)
  finally:
    ckpts.close()
  best = meta.get('best') or {}
  return dict(info, trained_epoch=meta.get('trained_epoch'), steps=meta.get('step'),
              best_top1=best.get('top1') if best.get('epoch', -1) >= 0 else None,
              num_batches_tracked=meta.get('step'))


# ------------------------------------------------- training checkpoints
def _top1(metrics: dict[str, Any]) -> float:
  return float(metrics['top1'])


class TrainCheckpoints:
  """The checkpoints of a training workdir: one Orbax CheckpointManager.

  `<workdir>/checkpoints/<step>/{state,data,meta}`: `state` the whole train
  state, `data` every process's input iterator position (grain's own Orbax
  handler: one JSON file per process), `meta` the loop's bookkeeping (epoch,
  best top-1, averagers, plateau scheduler). A save after an evaluation carries
  its metrics (`{'top1': ...}`); the policy keeps the latest `keep` checkpoints
  and the one with the highest top-1, so `latest` and `best` may be one
  directory. With `async_save`, `save` returns once the arrays are copied off
  the devices and the files are written in the background (one save in flight
  at a time; `wait()` or `close()` waits for it).
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 1, create: bool = False,
               async_save: bool = False):
    self.root = epath.Path(os.path.abspath(os.fspath(workdir))) / CHECKPOINTS_DIR
    if not create and not self.root.exists():
      raise FileNotFoundError(f'{self.root}: no checkpoints (is {workdir} a training workdir?)')
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(max(1, int(keep))),
        ocp.checkpoint_managers.BestN(get_metric_fn=_top1, n=1, keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        create=create, cleanup_tmp_directories=True, enable_async_checkpointing=async_save,
        best_fn=_top1, best_mode='max', preservation_policy=policy)
    handlers = {'state': ocp.StandardCheckpointHandler(), 'data': grain.checkpoint.CheckpointHandler(),
                'meta': ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.root, options=options, item_handlers=handlers)

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

  def wait(self):
    self.manager.wait_until_finished()

  def step_of(self, which: str = 'latest') -> int | None:
    """The step of the latest checkpoint, or of the best (highest top-1) one; None if there is none."""
    if which == 'latest':
      return self.manager.latest_step()
    if which == 'best':
      return self.manager.best_step()
    raise ValueError(f"which must be 'best' or 'latest', got {which!r}")

  def latest_step(self) -> int | None:
    return self.step_of('latest')

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    """Saves at `step`; `metrics` (with 'top1') when an evaluation of these weights was made."""
    items = {'state': ocp.args.StandardSave(state),
             'meta': ocp.args.JsonSave(dict(meta, step=int(step)))}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)

  def restore(self, which: str, abstract_state: Any, data_iterator: Any = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores the state into `abstract_state`'s structure/shardings (and the iterator)."""
    step = self._existing(which)
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], dict(restored['meta'])

  def restore_state_tree(self, which: str = 'best') -> tuple[Any, dict[str, Any]]:
    """Restores the state without a target structure (numpy leaves), for evaluation and export."""
    step = self._existing(which)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    state = jax.tree.map(np.asarray, restored['state'])
    return state, dict(restored['meta'])

  def read_meta(self, which: str = 'latest') -> dict[str, Any]:
    step = self._existing(which)
    return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'])

  def _existing(self, which: str) -> int:
    step = self.step_of(which)
    if step is None:
      hint = ' (a run writes its best checkpoint with its first evaluation)' if which == 'best' else ''
      raise FileNotFoundError(f'{self.root}: no {which} checkpoint{hint}')
    return step
