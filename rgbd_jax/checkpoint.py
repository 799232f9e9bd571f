"""Orbax checkpoints: model variables (converted or trained) and training runs.

Two layouts, both written by Orbax, which saves into a temporary directory and
renames it into place when complete, so a crash mid-save leaves the previous
checkpoint intact and no half-written one behind:

* a variables directory (`save_variables`), used for converted PyTorch weights:

      <dir>/config.json      the resolved config the variables belong to
      <dir>/variables/       Orbax tree {'params': ..., 'batch_stats': ...}

* a training workdir (`TrainCheckpoints`):

      <workdir>/config.json
      <workdir>/checkpoints/latest/<step>/{state,data,meta}
      <workdir>/checkpoints/best/<step>/{state,data,meta}

  `state` is the whole train state (params, batch_stats, opt_state, step, rng),
  `data` the input iterator position of every process, `meta` a small JSON
  (epoch, step in epoch, best top-1, ...).

`load_variables(path)` reads either layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from rgbd_jax import configs

CONFIG_FILE = 'config.json'
VARIABLES_ITEM = 'variables'
CHECKPOINTS_DIR = 'checkpoints'
COLLECTIONS = ('params', 'batch_stats')


class _OrbaxInfoFilter(logging.Filter):
  """Drops Orbax's per-save INFO chatter (dozens of lines per checkpoint); keeps its warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def quiet_orbax_logs() -> None:
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxInfoFilter())


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
                   config: ml_collections.ConfigDict) -> None:
  """Saves {'params', 'batch_stats'} and the config as an Orbax checkpoint directory.

  `directory` must not hold a previous `variables` item (Orbax refuses to
  overwrite); the config is written beside it.
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


# ----------------------------------------------------- data iterator state
class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves the input iterator position of this process as JSON.

  Every process writes its own file (each reads its own shard of the data), so
  a multi-host run resumes each host where it stopped.
  """

  def _file(self, directory: epath.Path) -> epath.Path:
    return directory / f'process_{jax.process_index()}-of-{jax.process_count()}.json'

  def save(self, directory: epath.Path, args: 'DataIteratorSave'):
    state = args.iterator.get_state()
    if isinstance(state, bytes):
      state = {'__bytes__': state.decode()}
    self._file(directory).write_text(json.dumps(state))

  def restore(self, directory: epath.Path, args: 'DataIteratorRestore'):
    path = self._file(directory)
    if not path.exists():
      raise FileNotFoundError(
          f'{path}: no data iterator state for this process (the checkpoint was written '
          f'with a different process count?)')
    state = json.loads(path.read_text())
    if isinstance(state, dict) and set(state) == {'__bytes__'}:
      state = state['__bytes__'].encode()
    if args.iterator is not None:
      args.iterator.set_state(state)
    return state

  def metadata(self, directory):
    del directory
    return None

  def finalize(self, directory):
    del directory

  def close(self):
    pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any = None


# ------------------------------------------------- training checkpoints
class TrainCheckpoints:
  """Latest and best checkpoints of a training workdir (two Orbax managers).

  `latest` keeps `keep` checkpoints; `best` keeps the one with the highest
  top-1 (we only save to it when top-1 improves).
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 1, create: bool = False):
    root = epath.Path(os.path.abspath(os.fspath(workdir))) / CHECKPOINTS_DIR
    self.root = root
    handlers = {'state': ocp.StandardCheckpointHandler(),
                'data': DataIteratorHandler(),
                'meta': ocp.JsonCheckpointHandler()}

    def manager(name, max_to_keep):
      options = ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False,
          cleanup_tmp_directories=True)
      return ocp.CheckpointManager(root / name, options=options, item_handlers=handlers)

    if create:
      root.mkdir(parents=True, exist_ok=True)
    self.managers = {'latest': manager('latest', max(1, keep)), 'best': manager('best', 1)}

  def close(self):
    for m in self.managers.values():
      m.close()

  def latest_step(self, which: str = 'latest') -> int | None:
    return self._manager(which).latest_step()

  def _manager(self, which: str) -> ocp.CheckpointManager:
    if which not in self.managers:
      raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    return self.managers[which]

  def save(self, which: str, step: int, state: Any, data_iterator: Any, meta: dict[str, Any]):
    items = {'state': ocp.args.StandardSave(state),
             'meta': ocp.args.JsonSave(dict(meta, step=int(step)))}
    if data_iterator is not None:
      items['data'] = DataIteratorSave(data_iterator)
    self._manager(which).save(int(step), args=ocp.args.Composite(**items), force=True)
    self._manager(which).wait_until_finished()

  def restore(self, which: str, abstract_state: Any, data_iterator: Any = None,
              step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores the state into `abstract_state`'s structure/shardings (and the iterator)."""
    m = self._manager(which)
    step = m.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{self.root / which}: no checkpoint')
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    if data_iterator is not None:
      items['data'] = DataIteratorRestore(data_iterator)
    restored = m.restore(step, args=ocp.args.Composite(**items))
    return restored['state'], dict(restored['meta'])

  def restore_state_tree(self, which: str = 'best') -> tuple[Any, dict[str, Any]]:
    """Restores the state without a target structure (numpy leaves), for evaluation."""
    m = self._manager(which)
    step = m.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'{self.root / which}: no checkpoint (a run writes `best` after its first evaluation)')
    restored = m.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    state = jax.tree.map(np.asarray, restored['state'])
    return state, dict(restored['meta'])
