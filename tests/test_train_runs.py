"""Training runs end to end (scripts/train.py on the tiny synthetic config), as subprocesses.

* 3 steps on 1 device with batch 4 == 3 steps on 4 CPU devices with batch 1 per
  device == 3 steps on 2 processes (CPU collectives) with batch 2 each (1e-4);
* 6 steps straight == 3 steps, then a restart that resumes to 6 (1e-5);
* evaluate.py on the run's workdir reproduces the best top-1 the run logged.

The runs share a persistent compilation cache, so identical programs compile once.
"""

import fcntl
import importlib.util
import json
import os
import pathlib
import re
import socket
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rgbd_jax.train import metrics as metrics_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _env(cache, devices=1, **extra):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.update(JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', PYTHONUNBUFFERED='1')
  if devices > 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env.update(extra)
  return env


def _train_cmd(data, workdir, *overrides):
  return [PYTHON, str(REPO / 'scripts' / 'train.py'), '--config', f'{REPO}/configs/synthetic.py:tiny',
          '--workdir', str(workdir), f'--config.common.data={data}/syn',
          f'--config.common.splits={data}/syn/dataset_splits/@synthetic', *overrides]


def _tiny_config(data):
  spec = importlib.util.spec_from_file_location('synthetic_config', REPO / 'configs' / 'synthetic.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.common.data = f'{data}/syn'
  config.common.splits = f'{data}/syn/dataset_splits/@synthetic'
  return config


def _check(proc, what):
  assert proc.returncode == 0, f'{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}'


def _losses(workdir):
  records = metrics_lib.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  steps = [r for r in records if not r.get('eval')]
  assert [r['step'] for r in steps] == list(range(1, len(steps) + 1))  # report_freq 1
  return np.array([r['loss'] for r in steps])


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _shared_dir(tmp_path_factory, name):
  # One directory for the whole session, also across pytest-xdist workers.
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  path = root / name
  path.mkdir(exist_ok=True)
  return path


def _launch(cmd, env):
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc, what):
  out, err = proc.communicate(timeout=900)
  _check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), what)
  return err


def _run_all(tmp):
  cache, data = tmp / 'jax_cache', tmp / 'data'
  w = {k: tmp / k for k in ('one', 'four', 'two_proc', 'straight')}
  # The dataset first (seconds), so that concurrent runs find it complete.
  from rgbd_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  config = _tiny_config(data)
  synthetic.ensure_dataset(config, workers=1, progress=False)

  # Two at a time: XLA compiles on one core.
  one = _launch(_train_cmd(data, w['one'], '--config.common.max_steps=3'), _env(cache))
  four = _launch(_train_cmd(data, w['four'], '--config.common.max_steps=3', '--config.common.batch_size=1'),
                 _env(cache, devices=4))
  _wait(one, '1 device, 3 steps')
  _wait(four, '4 devices, 3 steps')

  straight = _launch(_train_cmd(data, w['straight'], '--config.common.max_steps=6'), _env(cache))
  port = _free_port()
  procs = [_launch(_train_cmd(data, w['two_proc'], '--config.common.max_steps=3',
                              '--config.common.batch_size=2'),
                   _env(cache, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}', JAX_NUM_PROCESSES='2',
                        JAX_PROCESS_ID=str(i))) for i in range(2)]
  _wait(straight, '1 device, 6 steps')
  for i, p in enumerate(procs):
    _wait(p, f'process {i} of 2')

  resumed = _launch(_train_cmd(data, w['one'], '--config.common.max_steps=6'), _env(cache))
  # SIGTERM in the middle of the first epoch (a checkpoint every step keeps the steps slow enough
  # to be caught mid-epoch, and exercises the background saves)
  w['sigterm'], w['busy'] = tmp / 'sigterm', tmp / 'busy'
  every_step = '--config.common.checkpoint_every_steps=1'
  term = _launch(_train_cmd(data, w['sigterm'], '--config.common.max_steps=6', every_step), _env(cache))
  _wait_for_step(w['sigterm'], 2, term)
  term.send_signal(signal.SIGTERM)
  term_out, term_err = term.communicate(timeout=300)
  log = _wait(resumed, 'restart to 6 steps')
  after_term = _launch(_train_cmd(data, w['sigterm'], '--config.common.max_steps=6', every_step), _env(cache))
  # one run per workdir: a second launch while the first holds the lock
  first = _launch(_train_cmd(data, w['busy'], '--config.common.max_steps=6'), _env(cache))
  _wait_for_lock(w['busy'], first)
  busy = subprocess.run(_train_cmd(data, w['busy'], '--config.common.max_steps=6'), env=_env(cache),
                        capture_output=True, text=True, timeout=300)
  _wait(first, 'the run that held the workdir')
  _wait(after_term, 'resume after SIGTERM')
  return {'dirs': {k: str(v) for k, v in w.items()}, 'data': str(data), 'cache': str(cache),
          'resumed_log': log[-20000:], 'term': [term.returncode, term_err[-20000:]],
          'busy': [busy.returncode, busy.stderr[-4000:]]}


def _wait_for_lock(workdir, proc):
  path = os.path.join(workdir, '.lock')
  deadline = time.time() + 300
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f'the run ended early: {proc.stderr.read()[-4000:]}')
    if os.path.exists(path) and str(proc.pid) in open(path).read():
      return
    time.sleep(0.1)
  raise AssertionError(f'{path} never named pid {proc.pid}')


def _wait_for_step(workdir, step, proc):
  path = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 600
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f'the run ended before step {step}: {proc.stderr.read()[-4000:]}')
    if os.path.exists(path) and any(r.get('step', 0) >= step for r in metrics_lib.read_metrics(path)):
      return
    time.sleep(0.2)
  raise AssertionError(f'no step {step} in {path} after 600 s')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Every run the tests compare, launched once per session (a lock keeps xdist workers from repeating it)."""
  tmp = _shared_dir(tmp_path_factory, 'train_runs')
  with open(tmp / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    result = tmp / 'result.json'
    if not result.exists():
      result.write_text(json.dumps(_run_all(tmp)))
    out = json.loads(result.read_text())
  out['dirs'] = {k: pathlib.Path(v) for k, v in out['dirs'].items()}
  return out


def test_device_count_does_not_change_the_losses(runs):
  one = _losses(runs['dirs']['one'])[:3]
  four = _losses(runs['dirs']['four'])
  assert len(four) == 3
  np.testing.assert_allclose(four, one, rtol=1e-4)
  # the 4-device run really had 4 devices, batch 1 each
  config = json.loads((runs['dirs']['four'] / 'config.json').read_text())
  assert config['common']['batch_size'] == 1


def test_two_processes_match_one(runs):
  one = _losses(runs['dirs']['one'])[:3]
  two = _losses(runs['dirs']['two_proc'])
  assert len(two) == 3
  np.testing.assert_allclose(two, one, rtol=1e-4)
  # each process saved its own data iterator position
  step_dir = runs['dirs']['two_proc'] / 'checkpoints' / '3' / 'data'
  assert sorted(p.name for p in step_dir.glob('process_*.json')) == [
      'process_0-of-2.json', 'process_1-of-2.json']


def test_restart_resumes_exactly(runs):
  straight = _losses(runs['dirs']['straight'])
  resumed = _losses(runs['dirs']['one'])
  assert len(straight) == 6 and len(resumed) == 6
  np.testing.assert_allclose(resumed, straight, rtol=1e-5)
  # the losses move: equal curves are not a constant
  assert np.ptp(straight) > 1e-3
  assert 'resumed' in runs['resumed_log']
  # the evaluation after the epoch (step 6) agrees too
  evals = [[r for r in metrics_lib.read_metrics(str(runs['dirs'][k] / 'metrics.jsonl')) if r.get('eval')]
           for k in ('straight', 'one')]
  assert len(evals[0]) == len(evals[1]) == 1
  assert evals[0][0]['top1'] == pytest.approx(evals[1][0]['top1'])


def test_evaluate_reproduces_best_top1(runs, tmp_path):
  workdir = runs['dirs']['straight']
  best = max(r['top1'] for r in metrics_lib.read_metrics(str(workdir / 'metrics.jsonl')) if r.get('eval'))
  output = tmp_path / 'out.npz'
  proc = subprocess.run([PYTHON, str(REPO / 'scripts' / 'evaluate.py'), '--workdir', str(workdir),
                         '--save_output', '--output', str(output)],
                        env=_env(runs['cache']), capture_output=True, text=True, timeout=600)
  _check(proc, 'evaluate.py')
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['top1'] == pytest.approx(best, abs=1e-9)
  for k in ('top1_xs', 'top1_xm', 'top1_xl', 'top1_xs+xm', 'top1_xs+xl', 'top1_xm+xl'):
    assert 0.0 <= result[k] <= 1.0
  with np.load(output) as z:
    assert z['logits'].shape == (12, 6) and len(set(z['names'].tolist())) == 12
    np.testing.assert_allclose(np.mean(z['preds'] == z['labels']), best)
  assert (workdir / 'learning_curves.png').exists() and (workdir / 'confusion_matrix.png').exists()


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(runs):
  """Preemption: SIGTERM stops the run after its current step with a checkpoint there (exit 143);
  the same command resumes it to the same losses as an uninterrupted run."""
  code, err = runs['term']
  assert code == 128 + signal.SIGTERM, err[-3000:]
  assert 'SIGTERM: stopping after this step' in err and 'Traceback' not in err
  stopped = re.search(r'stopped at step (\d+) of 6 with a checkpoint', err)
  assert stopped and 2 <= int(stopped.group(1)) < 6, err[-3000:]  # inside the first epoch
  straight = _losses(runs['dirs']['straight'])
  resumed = _losses(runs['dirs']['sigterm'])
  assert len(resumed) == 6
  np.testing.assert_allclose(resumed, straight, rtol=1e-5)


def test_second_run_on_a_busy_workdir_refuses(runs):
  code, err = runs['busy']
  assert code == 1, err
  assert 'error:' in err and 'pid' in err and 'Traceback' not in err
  # the first run finishes with a clean record: each step once
  assert len(_losses(runs['dirs']['busy'])) == 6
