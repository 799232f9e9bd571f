"""Runs that cannot go wrong silently: config changes on resume, signals, epochs in exported files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax.train import config_history
from rgbd_jax.train import signals


def test_fresh_run_records_its_config(tmp_path):
  config = configs.base_config()
  config_history.record(str(tmp_path), config, resuming=False, step=0)
  assert checkpoint.read_config(tmp_path).model.N == config.model.N
  lines = (tmp_path / config_history.HISTORY_FILE).read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])['event'] == 'start'


def test_structural_change_on_resume_names_each_key(tmp_path):
  config = configs.base_config()
  config_history.record(str(tmp_path), config, resuming=False, step=0)
  changed = configs.base_config()
  changed.model.num_classes = 10
  changed.model.N = 4
  changed.common.epochs = 7
  with pytest.raises(ValueError) as e:
    config_history.record(str(tmp_path), changed, resuming=True, step=30)
  text = str(e.value)
  assert 'model.num_classes: 60 -> 10' in text and 'model.N: 6 -> 4' in text
  assert 'common.epochs' not in text  # allowed: not among the reasons
  assert '--workdir' in text and 'pretrained' in text
  # the record is untouched
  assert checkpoint.read_config(tmp_path).model.N == 6
  assert len((tmp_path / config_history.HISTORY_FILE).read_text().splitlines()) == 1


def test_allowed_change_is_applied_logged_and_kept(tmp_path, caplog):
  config = configs.base_config()
  config_history.record(str(tmp_path), config, resuming=False, step=0)
  changed = configs.base_config()
  changed.common.epochs = 7
  changed.common.learning_rate = 0.02
  config_history.record(str(tmp_path), changed, resuming=True, step=30)
  assert 'common.epochs 100 -> 7' in caplog.text
  assert checkpoint.read_config(tmp_path).common.epochs == 7
  history = [json.loads(l) for l in (tmp_path / config_history.HISTORY_FILE).read_text().splitlines()]
  assert [h['event'] for h in history] == ['start', 'resume with changes']
  assert history[0]['config']['common']['epochs'] == 100 and history[1]['config']['common']['epochs'] == 7
  assert history[1]['changes'] == {'common.epochs': [100, 7], 'common.learning_rate': [0.005, 0.02]}
  assert history[1]['step'] == 30


_SIGNAL_PROBE = textwrap.dedent('''
    import sys, time
    from rgbd_jax.train import signals
    cleaned = []
    with signals.StopRequest(cleanups=(lambda: print('cleaned up', flush=True),)) as stop:
      print('ready', flush=True)
      if sys.argv[1] == 'start-up':
        time.sleep(30)            # start-up: the signal ends the process at once
      stop.training = True
      print('training', flush=True)
      for _ in range(3000):       # "steps": the flag stops them
        if stop.requested:
          print('stopped by', stop.name, flush=True)
          break
        time.sleep(0.01)
      time.sleep(30)              # a second signal exits at once
''')


def _probe(phase):
  return subprocess.Popen([sys.executable, '-c', _SIGNAL_PROBE, phase], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _read_until(proc, word, lines):
  while True:
    line = proc.stdout.readline()
    assert line, (lines, proc.stderr.read())
    lines.append(line.strip())
    if line.startswith(word):
      return line.strip()


def test_signal_during_start_up_exits_at_once_after_cleanups():
  proc, lines = _probe('start-up'), []
  _read_until(proc, 'ready', lines)
  start = time.time()
  proc.send_signal(signal.SIGINT)
  _read_until(proc, 'cleaned up', lines)
  proc.wait(timeout=10)
  assert time.time() - start < 5 and proc.returncode == 130
  assert 'SIGINT before training started, nothing to save: exiting' in proc.stderr.read()


def test_signal_during_training_stops_after_the_step_and_a_second_exits():
  proc, lines = _probe('training'), []
  _read_until(proc, 'training', lines)
  proc.send_signal(signal.SIGTERM)
  assert _read_until(proc, 'stopped by', lines) == 'stopped by SIGTERM'
  proc.send_signal(signal.SIGINT)  # the second signal: immediate exit
  proc.wait(timeout=10)
  assert proc.returncode == 128 + signal.SIGINT
  assert 'SIGINT again: exiting' in proc.stderr.read()
  assert 'cleaned up' not in lines


def test_exit_status():
  assert signals.exit_status(signal.SIGTERM) == 143 and signals.exit_status(None) == 0


def _workdir_with_checkpoint(path, config, variables, *, step, trained_epoch, best_top1):
  import grain  # pylint: disable=g-import-not-at-top

  class _Position(grain.DatasetIterator):
    def __next__(self):
      raise StopIteration

    def get_state(self):
      return {'next_batch': step}

    def set_state(self, state):
      del state

  checkpoint.write_config(path, config)
  ckpts = checkpoint.TrainCheckpoints(path, create=True)
  state = {'params': variables['params'], 'batch_stats': variables['batch_stats'], 'step': np.int32(step)}
  ckpts.save(step, state, _Position(), {'epoch': trained_epoch + 1, 'trained_epoch': trained_epoch,
                                        'best': {'top1': best_top1, 'epoch': trained_epoch}},
             metrics={'top1': best_top1})
  ckpts.close()


def test_to_torch_carries_epoch_best_counts_and_an_optimizer_the_original_resumes(
    tmp_path, tiny_config, random_variables):
  import torch  # pylint: disable=g-import-not-at-top
  from rgbd_jax.convert import cli, torch_import  # pylint: disable=g-import-not-at-top
  from rgbd_jax.models import build  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  variables = random_variables(build.variable_shapes(config), seed=2)
  _workdir_with_checkpoint(tmp_path / 'run', config, variables, step=36, trained_epoch=12, best_top1=0.875)
  cli.orbax_to_torch(str(tmp_path / 'run'), str(tmp_path / 'model_best.pth.tar'))
  saved = torch.load(tmp_path / 'model_best.pth.tar', weights_only=False)
  assert saved['epoch'] == 13 and saved['bestacc'] == pytest.approx(87.5)  # the original's own fields
  counts = {k: int(v) for k, v in saved['model'].items() if k.endswith('num_batches_tracked')}
  assert counts and set(counts.values()) == {36}
  # the original's --resume: optimizer.load_state_dict over model.parameters() (buffers excluded)
  params = [torch.nn.Parameter(v.float()) for k, v in saved['model'].items()
            if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
  opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
  opt.load_state_dict(saved['optimizer'])
  assert opt.param_groups[0]['lr'] == config.common.learning_rate
  # back: the epoch convention survives the round trip, into a converted directory
  cli.torch_to_orbax(str(tmp_path / 'model_best.pth.tar'), str(tmp_path / 'converted'), config)
  info = checkpoint.load_info(tmp_path / 'converted')
  assert info['trained_epoch'] == 12 and info['best_top1'] == pytest.approx(0.875)
  assert set(info['num_batches_tracked'].values()) == {36}
  cli.orbax_to_torch(str(tmp_path / 'converted'), str(tmp_path / 'again.pth.tar'))
  again = torch.load(tmp_path / 'again.pth.tar', weights_only=False)
  assert again['epoch'] == 13 and again['bestacc'] == pytest.approx(87.5)
  _, meta = torch_import.read_state_dict(str(tmp_path / 'again.pth.tar'))
  assert meta['epoch'] == 13


# ----------------------------------------------------------------- whole runs, as a user starts them

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  """The tiny synthetic dataset and a copy of its split files to spoil."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rgbd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('synthetic_config', os.path.join(REPO, 'configs', 'synthetic.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  root = tmp_path_factory.mktemp('tiny_data')
  config.common.data = str(root / 'syn')
  synthetic.ensure_dataset(config, workers=1, progress=False)
  return root / 'syn', config.common.splits


def _train(data, workdir, *extra, splits=None):
  cmd = [sys.executable, os.path.join(REPO, 'scripts', 'train.py'), '--config',
         os.path.join(REPO, 'configs', 'synthetic.py') + ':tiny', '--workdir', str(workdir),
         f'--config.common.data={data}', *([f'--config.common.splits={splits}'] if splits else []), *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  return cmd, env


def _spoiled_splits(tmp_path, splits, phase, line_no, label):
  out = tmp_path / 'splits'
  out.mkdir()
  for name in ('train.txt', 'valid.txt'):
    lines = open(os.path.join(splits, name)).read().splitlines()
    if name == f'{phase}.txt':
      fields = lines[line_no - 1].split()
      lines[line_no - 1] = f'{fields[0]} {fields[1]} {label}'
    (out / name).write_text('\n'.join(lines) + '\n')
  return out


def test_out_of_range_label_fails_before_any_step_naming_file_line_and_value(tiny_data, tmp_path):
  data, splits = tiny_data
  spoiled = _spoiled_splits(tmp_path, splits, 'valid', 5, 99)
  cmd, env = _train(data, tmp_path / 'run', splits=spoiled)
  start = time.time()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert f'{spoiled / "valid.txt"}' in proc.stderr and 'line 5: label 99' in proc.stderr
  assert '[0, 6)' in proc.stderr and 'Traceback' not in proc.stderr
  assert not (tmp_path / 'run' / 'metrics.jsonl').exists()
  assert time.time() - start < 120


def test_missing_frame_of_an_unsampled_video_fails_before_any_step(tiny_data, tmp_path):
  data, splits = tiny_data
  broken = tmp_path / 'data'
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(data, broken)
  last = open(os.path.join(splits, 'valid.txt')).read().split()[0]  # the last video is sampled last
  victim = sorted(os.listdir(broken / 'Images' / last))[-1]
  os.remove(broken / 'Images' / last / victim)
  cmd, env = _train(broken, tmp_path / 'run', splits=splits)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert last in proc.stderr and 'skip_bad_videos' in proc.stderr and 'Traceback' not in proc.stderr


def test_sigint_three_seconds_after_launch_stops_promptly(tiny_data, tmp_path):
  data, splits = tiny_data
  cmd, env = _train(data, tmp_path / 'run', splits=splits)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(3)
  sent = time.time()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert time.time() - sent < 30
  assert proc.returncode in (128 + signal.SIGINT, 1), err[-3000:]
  assert 'Traceback' not in err and 'Exception ignored' not in err
