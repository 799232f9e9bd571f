"""Checkpoints: converted-variables directories, training checkpoints, crash safety, clear errors."""

import json

import numpy as np
import pytest

from rgbd_jax import configs
from rgbd_jax import checkpoint
from rgbd_jax.train import evaluation


class _Iterator:
  """Stands for a grain iterator: only its position matters to checkpoints."""

  def __init__(self, position=0):
    self.position = position

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
  ckpts.save('latest', 3, {'params': _variables()['params'], 'batch_stats': {}}, _Iterator(7),
             {'epoch': 0})
  ckpts.close()
  with pytest.raises(FileNotFoundError, match='best.*no checkpoint'):
    checkpoint.load_variables(tmp_path)
  _, variables = checkpoint.load_variables(tmp_path, which='latest')
  assert variables['params']['LinearMap']['1']['kernel'].shape == (4, 3)
  with pytest.raises(ValueError, match="'best' or 'latest'"):
    checkpoint.load_variables(tmp_path, which='newest')


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  state = {'params': _variables(1)['params'], 'step': np.array(3, np.int32)}
  ckpts = checkpoint.TrainCheckpoints(tmp_path, create=True)
  ckpts.save('latest', 3, state, _Iterator(12), {'epoch': 0, 'best': {'top1': 0.5}})

  # The next save dies after the state was written but before the save completed.
  def die(self, directory, args):
    raise RuntimeError('killed mid-save')
  monkeypatch.setattr(checkpoint.DataIteratorHandler, 'save', die)
  newer = {'params': _variables(2)['params'], 'step': np.array(6, np.int32)}
  with pytest.raises(RuntimeError, match='killed mid-save'):
    ckpts.save('latest', 6, newer, _Iterator(24), {'epoch': 1, 'best': {'top1': 0.5}})
  monkeypatch.undo()

  # A restart sees step 3, complete, and nothing of step 6.
  again = checkpoint.TrainCheckpoints(tmp_path, create=True)
  assert again.latest_step() == 3
  it = _Iterator()
  restored, meta = again.restore('latest', state, it)
  assert meta['step'] == 3 and meta['epoch'] == 0 and it.position == 12
  np.testing.assert_array_equal(restored['params']['LinearMap']['1']['kernel'],
                                state['params']['LinearMap']['1']['kernel'])
  leftovers = [p.name for p in (tmp_path / 'checkpoints' / 'latest').iterdir() if not p.name.isdigit()]
  assert not leftovers, leftovers
  again.close()


def test_saved_config_keeps_unknown_keys_and_types(tmp_path):
  config = configs.base_config()
  with config.unlocked():
    config.common.my_new_key = 'x'
  checkpoint.write_config(tmp_path, config)
  got = checkpoint.read_config(tmp_path)
  assert got.common.my_new_key == 'x'
  assert got.common.loss_lamdb == list(config.common.loss_lamdb)
  assert json.loads((tmp_path / 'config.json').read_text())['model']['Network'] == 'I3DWTrans'
