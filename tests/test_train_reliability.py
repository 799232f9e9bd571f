"""Runs that cannot go wrong silently: config changes on resume, signals, epochs in exported files."""

import json
import os
import signal
import subprocess
import sys
import textwrap

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
    import os, signal, sys, time
    from rgbd_jax.train import signals
    with signals.StopRequest() as stop:
      try:
        print('ready', flush=True)
        time.sleep(30)            # "start-up": the signal interrupts it
        print('not interrupted', flush=True)
      except signals.Interrupted as e:
        print('interrupted', e.signum, flush=True)
      stop.raise_on_signal = False
      print('training', flush=True)
      for _ in range(3000):       # "steps": the flag stops them
        if stop.requested:
          print('stopped by', stop.name, flush=True)
          break
        time.sleep(0.01)
      time.sleep(30)              # a second signal exits at once
''')


def test_signals_interrupt_start_up_then_stop_steps_then_exit(tmp_path):
  proc = subprocess.Popen([sys.executable, '-c', _SIGNAL_PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  lines = []

  def read_until(word):
    while True:
      line = proc.stdout.readline()
      assert line, (lines, proc.stderr.read())
      lines.append(line.strip())
      if line.startswith(word):
        return line.strip()

  read_until('ready')
  proc.send_signal(signal.SIGINT)
  assert read_until('interrupted') == f'interrupted {int(signal.SIGINT)}'
  read_until('training')
  # the flag set by the first signal persists: steps stop at once
  assert read_until('stopped by') == 'stopped by SIGINT'
  proc.send_signal(signal.SIGTERM)  # the second signal: immediate exit
  proc.wait(timeout=10)
  assert proc.returncode == 128 + signal.SIGTERM
  assert 'again: exiting now' in proc.stderr.read()


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
