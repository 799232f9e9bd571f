"""Checkpoints: converted-variables directories, training checkpoints, crash safety, clear errors."""

import json
import time

import grain
import numpy as np
import pytest

from rgbd_jax import configs
from rgbd_jax import checkpoint
from rgbd_jax.train import evaluation


class _Iterator(grain.DatasetIterator):
  """Stands for the pipeline's grain iterator: only its position matters to checkpoints."""

  def __init__(self, position=0):
    super().__init__()
    self.position = position

  def __next__(self):
    self.position += 1
    return self.position

  def get_state(self):
    return {'position': self.position}

  def set_state(self, state):
    self.position = state['position']


def _variables(seed=0):
  rng = np.random.default_rng(seed)
  return {'params': {'LinearMap': {'1': {'kernel': rng.normal(size=(4, 3)).astype(np.float32)}},
                     'frp_module': {'rpconv1d': {'weight': rng.normal(size=(1, 2, 1)).astype(np.float32)}}},
          'batch_stats': {'Conv3d_1a_7x7': {'bn': {'mean': rng.normal(size=(3,)).astype(np.float32)}}}}


def test_variables_round_trip_with_config(tmp_path):
  config = configs.base_config()
  config.model.N = 3
  config.dataset.angle = (-7, 7)
  variables = _variables()
  checkpoint.save_variables(tmp_path / 'conv', variables, config)
  got_config, got = checkpoint.load_variables(tmp_path / 'conv')
  assert got_config.model.N == 3 and got_config.dataset.angle == (-7, 7)
  np.testing.assert_array_equal(got['params']['LinearMap']['1']['kernel'],
                                variables['params']['LinearMap']['1']['kernel'])
  np.testing.assert_array_equal(got['batch_stats']['Conv3d_1a_7x7']['bn']['mean'],
                                variables['batch_stats']['Conv3d_1a_7x7']['bn']['mean'])
  with pytest.raises(FileExistsError, match='conv'):
    checkpoint.save_variables(tmp_path / 'conv', variables, config)


def test_bad_paths_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    checkpoint.load_variables(tmp_path / 'nowhere')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='neither a variables checkpoint'):
    checkpoint.load_variables(tmp_path / 'empty')
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'config.json').write_text('{not json')
  (tmp_path / 'run' / 'checkpoints').mkdir()
  with pytest.raises(ValueError, match='config.json: not valid JSON'):
    checkpoint.load_variables(tmp_path / 'run')
  with pytest.raises(FileNotFoundError, match='workdir not found.*nowhere'):
    evaluation.run(workdir=str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='--workdir.*--checkpoint'):
    evaluation.run()


def test_workdir_without_best_checkpoint(tmp_path):
  checkpoint.write_config(tmp_path, configs.base_config())
  ckpts = checkpoint.TrainCheckpoints(tmp_path, create=True)
  ckpts.save(3, {'params': _variables()['params'], 'batch_stats': {}}, _Iterator(7), {'epoch': 0})
  ckpts.close()
  with pytest.raises(FileNotFoundError, match='no best checkpoint'):
    checkpoint.load_variables(tmp_path)
  _, variables = checkpoint.load_variables(tmp_path, which='latest')
  assert variables['params']['LinearMap']['1']['kernel'].shape == (4, 3)
  with pytest.raises(ValueError, match="'best' or 'latest'"):
    checkpoint.load_variables(tmp_path, which='newest')


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  state = {'params': _variables(1)['params'], 'step': np.array(3, np.int32)}
  ckpts = checkpoint.TrainCheckpoints(tmp_path, create=True)
  ckpts.save(3, state, _Iterator(12), {'epoch': 0, 'best': {'top1': 0.5}})

  # The next save dies after the state was written but before the save completed.
  def die(self, directory, item=None, args=None):
    raise RuntimeError('killed mid-save')
  monkeypatch.setattr(grain.checkpoint.CheckpointHandler, 'save', die)
  newer = {'params': _variables(2)['params'], 'step': np.array(6, np.int32)}
  with pytest.raises(RuntimeError, match='killed mid-save'):
    ckpts.save(6, newer, _Iterator(24), {'epoch': 1, 'best': {'top1': 0.5}})
    ckpts.wait()
  monkeypatch.undo()

  # A restart sees step 3, complete, and nothing of step 6.
  again = checkpoint.TrainCheckpoints(tmp_path, create=True)
  assert again.latest_step() == 3
  it = _Iterator()
  restored, meta = again.restore('latest', state, it)
  assert meta['step'] == 3 and meta['epoch'] == 0 and it.position == 12
  np.testing.assert_array_equal(restored['params']['LinearMap']['1']['kernel'],
                                state['params']['LinearMap']['1']['kernel'])
  # Orbax removes the half-written directory in a background thread it starts on creation
  deadline = time.time() + 30
  while True:
    leftovers = [p.name for p in (tmp_path / 'checkpoints').iterdir() if not p.name.isdigit()]
    if not leftovers or time.time() > deadline:
      break
    time.sleep(0.1)
  assert not leftovers, leftovers
  again.close()


def test_saved_config_keeps_unknown_keys_as_inert_and_types(tmp_path):
  config = configs.base_config()
  with config.unlocked():
    config.common.my_new_key = 'x'
  checkpoint.write_config(tmp_path, config)
  got = checkpoint.read_config(tmp_path)
  assert got.inert.common.my_new_key == 'x' and 'my_new_key' not in got.common  # kept, and visibly inert
  assert got.common.loss_lamdb == list(config.common.loss_lamdb)
  assert json.loads((tmp_path / 'config.json').read_text())['model']['Network'] == 'I3DWTrans'


@pytest.mark.parametrize('async_save', [False, True])
def test_one_manager_keeps_the_latest_and_the_best(tmp_path, async_save):
  """keep=1: the newest checkpoint and the best-evaluated one survive; mid-epoch saves carry no metrics."""
  ckpts = checkpoint.TrainCheckpoints(tmp_path, keep=1, create=True, async_save=async_save)
  history = [(2, 0.5), (3, None), (4, 0.7), (5, None), (6, 0.6), (7, None)]
  for step, top1 in history:
    state = {'w': np.full((3,), step, np.float32)}
    ckpts.save(step, state, _Iterator(step), {'step_seen': step, 'trained_epoch': step // 2},
               metrics=None if top1 is None else {'top1': top1})
  ckpts.wait()
  assert ckpts.step_of('latest') == 7 and ckpts.step_of('best') == 4
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [4, 7]
  it = _Iterator()
  restored, meta = ckpts.restore('best', {'w': np.zeros((3,), np.float32)}, it)
  assert meta['step'] == 4 and it.position == 4 and restored['w'][0] == 4
  ckpts.close()
  info = checkpoint.load_info(tmp_path, 'latest')
  assert info['steps'] == 7 and info['trained_epoch'] == 3


def test_epoch_convention_round_trip():
  """Weights trained through epoch E: the original's file says E + 1 (its `epoch + 1` on save)."""
  assert checkpoint.to_torch_epoch(12) == 13
  assert checkpoint.from_torch_epoch(checkpoint.to_torch_epoch(12)) == 12


def test_variables_dir_keeps_its_info(tmp_path):
  checkpoint.save_variables(tmp_path / 'v', _variables(), configs.base_config(),
                            info={'trained_epoch': 12, 'best_top1': 0.9, 'num_batches_tracked': 7})
  info = checkpoint.load_info(tmp_path / 'v')
  assert info['trained_epoch'] == 12 and info['best_top1'] == 0.9 and info['num_batches_tracked'] == 7
  checkpoint.save_variables(tmp_path / 'w', _variables(), configs.base_config())
  assert checkpoint.load_info(tmp_path / 'w')['trained_epoch'] is None
