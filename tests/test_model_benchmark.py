"""The model benchmark: it times train.py's own steps, sweeps dtypes and batches past an OOM, and runs the
original (a stand-in here) in processes of its own, alternating with processes of ours."""

import argparse
import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import make_tiny_config
from rgbd_jax.tools.benchmark import common
from rgbd_jax.tools.benchmark import model as model_bench
from rgbd_jax.tools.benchmark import original as original_bench
from rgbd_jax.tools.benchmark import report
from rgbd_jax.train import state as state_lib
from rgbd_jax.train import steps


def _tiny_overrides(network='I3DWTrans'):
  """conftest's tiny network as --set overrides of configs/ntu.py; one Transformer layer and XLA's
  fastest compile (common.xla_opt_level, which the jitted steps honour) keep the tests short."""
  tiny, ntu = make_tiny_config(network), common.load_config(model_bench.DEFAULT_CONFIG)
  out = [f'{section}.{key}={value}' for section in ('common', 'model', 'dataset')
         for key, value in tiny[section].items()
         if not isinstance(value, ml_collections.ConfigDict) and ntu[section][key] != value]
  return out + ['model.N=1', 'common.xla_opt_level=0']


def _args(*argv):
  parser = argparse.ArgumentParser()
  model_bench.add_arguments(parser)
  overrides = [a for o in _tiny_overrides() for a in ('--set', o)]
  return parser.parse_args(model_bench.normalize_argv(overrides + ['--size', '32', '--peak-tflops', '1', '--init', 'random']
                                                      + list(argv)))


def _rows(result):
  return {(r['phase'], r['dtype'], r['batch']): r for r in result['rows']}


def test_times_train_py_step_and_goes_on_after_oom(tmp_path, monkeypatch, capsys):
  calls = {'jit_train_step': 0, 'train_step traced': 0}
  jit_train_step, train_step, create = steps.jit_train_step, steps.train_step, state_lib.create_train_state

  def counting_jit(*a, **k):
    calls['jit_train_step'] += 1
    return jit_train_step(*a, **k)

  def counting_step(*a, **k):
    calls['train_step traced'] += 1
    return train_step(*a, **k)

  initial = []
  monkeypatch.setattr(steps, 'jit_train_step', counting_jit)
  monkeypatch.setattr(steps, 'train_step', counting_step)
  monkeypatch.setattr(state_lib, 'create_train_state',
                      lambda *a, **k: initial.append(jax.device_get(create(*a, **k))) or jax.device_put(initial[-1]))
  compile_for_real = model_bench._compile

  def compile_or_oom(jitted, args, cell):  # out of memory where a bigger device would have it
    if (cell['dtype'], cell['batch']) in (('float32', 2), ('bfloat16', 1)):
      raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.99GiB.')
    return compile_for_real(jitted, args, cell)

  monkeypatch.setattr(model_bench, '_compile', compile_or_oom)
  after = []
  run_ours = model_bench.measure_ours
  monkeypatch.setattr(model_bench, 'measure_ours', lambda spec, emit: run_ours(spec, emit, on_train_state=after.append))
  out = tmp_path / 'out.json'
  args = _args('--batches', '1,2', '--dtypes', 'float32,bfloat16', '--phases', 'train', '--repeats', '2',
               '--warmup', '1', '--json', str(out), '--markdown', str(tmp_path / 'table.md'))
  assert model_bench.run(args) == 0
  result = json.loads(out.read_text())
  rows = _rows(result)
  # batch-major: float32 B=1 runs, bfloat16 B=1 is out of memory (that dtype stops), float32 B=2 is
  # out of memory; the largest batch that ran is reported per dtype
  assert {k: r['ours']['status'] for k, r in rows.items()} == {
      ('train', 'float32', 1): 'ok', ('train', 'float32', 2): 'OOM', ('train', 'bfloat16', 1): 'OOM',
      ('train', 'bfloat16', 2): 'skipped'}
  assert result['largest_batch']['ours'] == {'train float32': 1, 'train bfloat16': None}
  # the timed step is train.py's: steps.jit_train_step (made once per dtype) around steps.train_step (traced
  # once: the simulated out-of-memory cells never lower)
  assert calls == {'jit_train_step': 2, 'train_step traced': 1}
  cell = rows[('train', 'float32', 1)]['ours']
  assert cell['gflop'] > 0.01 and cell['tflops'] > 0 and 0 < cell['mfu'] < 1 and cell['peak_bytes'] > 0
  assert cell['memory']['temp'] > 0 and cell['round_medians'] == [cell['median']]
  assert cell['min'] <= cell['median'] <= cell['max']
  record = next(r for r in result['rounds']['ours'][0] if r.get('phase') == 'train' and r['status'] == 'ok')
  assert record['steps_taken'] == 3 and len(record['times']) == 2
  # one state, moved by the 3 steps as train.py moves it: step counter, parameters, momentum
  (before,), (state,) = initial, after
  assert int(before.step) == 0 and int(state.step) == 3
  moved = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(before.params, jax.device_get(state.params))
  assert moved(before.opt_state, jax.device_get(state.opt_state))
  printed = capsys.readouterr().out
  assert '| I3DWTrans | bfloat16 | train | 1 | OOM |' in printed and 'ours train float32 B=1:' in printed
  assert '| I3DWTrans | bfloat16 | train | 2 | skipped |' in printed
  assert (tmp_path / 'table.md').read_text().startswith('| network | dtype | phase | B |')


def test_fusion_network_runs_in_bf16(tmp_path):
  out = tmp_path / 'out.json'
  args = _args('--config.model.Network=FusionNet', '--batches', '1', '--dtypes', 'bfloat16', '--phases', 'eval',
               '--repeats', '1', '--warmup', '0', '--json', str(out))
  assert model_bench.run(args) == 0
  (row,) = json.loads(out.read_text())['rows']
  assert (row['network'], row['dtype'], row['ours']['status']) == ('FusionNet', 'bfloat16', 'ok')
  assert row['ours']['gflop'] > 0 and row['ours']['peak_bytes'] > 0


_STAND_IN = '''
import os
import pathlib
import sys

import torch

sys.path.append(['../../', '../'])  # as the original's lib/model/fusion_Net.py
LOG = pathlib.Path(__file__).parent / 'runs.log'
with LOG.open('a') as f:
  f.write(f'{os.getpid()}\\n')
ROUND = len(LOG.read_text().split())


class DSNNet(torch.nn.Module):
  """Stands in for the original's network; fails in its second process."""

  def __init__(self, args, num_classes, pretrained):
    super().__init__()
    self.head = torch.nn.Linear(3, num_classes)

  def forward(self, video, heat):
    assert video.shape[1:] == (3, 16, 32, 32) and heat.shape[1:] == (1, 16, 32, 32), (video.shape, heat.shape)
    if ROUND == 2:
      raise RuntimeError('stand-in failure in round 2')
    logits = self.head(video.mean(dim=(2, 3, 4)))
    return (logits, logits, logits, logits), logits.sum() * 0, None
'''


def test_original_runs_in_its_own_processes_alternating_and_its_failure_fails(tmp_path, capsys):
  model_dir = tmp_path / 'original' / 'lib' / 'model'
  model_dir.mkdir(parents=True)
  (model_dir / '__init__.py').write_text(_STAND_IN)
  out = tmp_path / 'out.json'
  args = _args('--original', str(tmp_path / 'original'), '--rounds', '2', '--batches', '2', '--dtypes', 'float32',
               '--phases', 'eval', '--repeats', '2', '--warmup', '0', '--json', str(out))
  assert model_bench.run(args) == 1
  captured = capsys.readouterr()
  assert 'Traceback' in captured.err and 'RuntimeError: stand-in failure in round 2' in captured.err
  assert '| I3DWTrans | float32 | eval | 2 |' in captured.out  # ours is reported first
  result = json.loads(out.read_text())
  ours = [next(r for r in records if r['event'] == 'plan') for records in result['rounds']['ours']]
  theirs = [next(r for r in records if r['event'] == 'info') for records in result['rounds']['original']]
  # four processes, none of them this one, one after the other: ours, original, ours, original
  pids = [ours[0]['pid'], theirs[0]['pid'], ours[1]['pid'], theirs[1]['pid']]
  assert len(set(pids + [os.getpid()])) == 5
  starts = [ours[0]['started'], theirs[0]['started'], ours[1]['started'], theirs[1]['started']]
  assert starts == sorted(starts)
  assert theirs[0]['sys_path_dropped'] == [repr(['../../', '../'])] and theirs[0]['threads'] == common.cores()
  (row,) = result['rows']
  assert row['ours']['rounds'] == 2 and row['ours']['spread_of'] == 'rounds'
  assert row['original']['rounds'] == 1 and row['ratio'] == pytest.approx(
      row['original']['median'] / row['ours']['median'])
  assert 'stand-in failure in round 2' in result['failure']


_RECORDING = '''
import torch

SEEN = []


class DSNNet(torch.nn.Module):
  """Stands in for the original's network: records what each call received."""

  def __init__(self, args, num_classes, pretrained):
    super().__init__()
    self.head = torch.nn.Linear(3, num_classes)

  def forward(self, video, heat):
    SEEN.append((self.training, torch.is_grad_enabled(), tuple(video.shape), tuple(heat.shape)))
    if video.shape[0] == 5:
      raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 9.99 GiB')
    logits = self.head(video.mean(dim=(2, 3, 4)))
    return (logits, logits, logits, logits), logits.sum() * 0, None
'''


def test_original_worker_steps_and_forwards(tmp_path, monkeypatch):
  import torch
  # the importer installs stand-in modules and CPU no-op .cuda(): undone after this test
  for name in ('torchvision', 'torchvision.transforms', 'torchvision.utils', 'utils', original_bench.PACKAGE):
    if name not in sys.modules:  # setitem then delitem: undone, the name is absent again
      monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setattr(torch.Tensor, 'cuda', torch.Tensor.cuda)
  monkeypatch.setattr(torch.nn.Module, 'cuda', torch.nn.Module.cuda)
  monkeypatch.setattr(sys, 'path', list(sys.path))
  model_dir = tmp_path / 'lib' / 'model'
  model_dir.mkdir(parents=True)
  (model_dir / '__init__.py').write_text(_RECORDING)
  records = []
  cells = [{'phase': 'eval', 'dtype': 'float32', 'batch': 1}, {'phase': 'eval', 'dtype': 'float32', 'batch': 2},
           {'phase': 'train', 'dtype': 'bfloat16', 'batch': 3}, {'phase': 'train', 'dtype': 'float32', 'batch': 5},
           {'phase': 'eval', 'dtype': 'float32', 'batch': 6}, {'phase': 'eval', 'dtype': 'bfloat16', 'batch': 4}]
  spec = {'original': str(tmp_path), 'config': model_bench.DEFAULT_CONFIG, 'cells': cells, 'size': 32,
          'frames': 8, 'repeats': 2, 'warmup': 1}
  assert original_bench.measure(spec, emit=records.append) == 0
  seen = sys.modules[original_bench.PACKAGE].SEEN
  shape = lambda b: ((b, 3, 8, 32, 32), (b, 1, 8, 32, 32))
  assert seen == ([(False, False, *shape(2))] * 3 + [(True, True, *shape(3))] * 3 + [(True, True, *shape(5))]
                  + [(False, False, *shape(4))] * 3)
  done = [r for r in records if r['event'] == 'cell']
  assert [(r['phase'], r['dtype'], r['batch'], r['status'], len(r.get('times', ()))) for r in done] == [
      ('eval', 'float32', 1, 'n/a', 0), ('eval', 'float32', 2, 'ok', 2), ('train', 'bfloat16', 3, 'ok', 2),
      ('train', 'float32', 5, 'OOM', 0), ('eval', 'float32', 6, 'skipped', 0), ('eval', 'bfloat16', 4, 'ok', 2)]


def test_original_worker_reports_a_missing_checkout(tmp_path):
  records = []
  spec = {'original': str(tmp_path / 'not-a-checkout'), 'config': model_bench.DEFAULT_CONFIG, 'cells': [],
          'size': 32, 'frames': 16, 'repeats': 1, 'warmup': 0}
  assert original_bench.measure(spec, emit=records.append) == 1
  assert records[-1]['event'] == 'failed' and 'not-a-checkout/lib/model not found' in records[-1]['error']


def test_sys_path_guard_drops_a_list_entry(monkeypatch):
  monkeypatch.setattr(sys, 'path', sys.path + [['../../', '../']])
  assert original_bench.sanitize_sys_path() == [['../../', '../']]
  assert all(isinstance(p, str) for p in sys.path)


def test_config_overrides_and_argv():
  assert model_bench.normalize_argv(['--config.model.dtype=bfloat16', '--config.model.N', '2', '--size', '8']) == [
      '--set', 'model.dtype=bfloat16', '--set', 'model.N=2', '--size', '8']
  c = common.load_config('configs/ntu.py', ['model.dtype=bfloat16', 'model.N=2', 'model.frp=false',
                                            'model.temp=[0.1, 0.2]', 'common.learning_rate=0.1'])
  assert (c.model.dtype, c.model.N, c.model.frp, list(c.model.temp), c.common.learning_rate) == (
      'bfloat16', 2, False, [0.1, 0.2], 0.1)
  with pytest.raises(KeyError, match='not a key'):
    common.load_config('configs/ntu.py', ['model.no_such_key=1'])
  # the dtype given as an override is the sweep's dtype; CPU defaults shrink, given values stay
  plan = model_bench.resolve_plan({'overrides': ['model.dtype=bfloat16']}, c, 'cpu')
  assert (plan['dtypes'], plan['size'], plan['batches']) == (['bfloat16'], 96, [2])
  plan = model_bench.resolve_plan({'overrides': [], 'size': 64, 'batches': [4, 1]}, c, 'gpu')
  assert (plan['dtypes'], plan['size'], plan['batches'], plan['frames']) == (['float32', 'bfloat16'], 64, [1, 4], 64)


def test_peak_table_and_rounds_aggregate():
  assert model_bench.table_peak('NVIDIA H100 80GB HBM3', 'bfloat16') == 989
  assert model_bench.table_peak('NVIDIA H100 80GB HBM3', 'float32') == 494
  assert model_bench.table_peak('NVIDIA H200', 'bfloat16') == 989
  assert model_bench.table_peak('NVIDIA A100-SXM4-80GB', 'float32') == 156
  assert model_bench.table_peak('TPU v5 lite', 'bfloat16') == 197
  assert model_bench.table_peak('cpu', 'float32') is None
  cell = lambda side, median: {'event': 'cell', 'side': side, 'phase': 'train', 'dtype': 'float32', 'batch': 2,
                               'status': 'ok', 'median': median, 'min': median, 'max': median, 'times': [median],
                               'gflop': 100.0, 'peak_tflops': 1.0, 'devices': 1, 'global_batch': 2}
  rows = report.aggregate('I3DWTrans', [[cell('ours', 1.0)], [cell('ours', 3.0)], [cell('ours', 2.0)]],
                          [[cell('original', 4.0)], [cell('original', 6.0)]])
  (row,) = rows
  assert (row['ours']['median'], row['ours']['min'], row['ours']['max']) == (2.0, 1.0, 3.0)
  assert row['original']['median'] == 5.0 and row['ratio'] == 2.5
  assert row['ours']['tflops'] == pytest.approx(0.05) and row['ours']['mfu'] == pytest.approx(0.05)
  assert '| I3DWTrans | float32 | train | 2 | 2 (1-3) | 1 | 0.05 | 5.0% | - | 5 (4-6) | 2.50x |' in report.markdown(rows)


def test_a_worker_stopped_at_the_budget_reports_its_cell():
  cell = {'side': 'ours', 'network': 'I3DWTrans', 'phase': 'train', 'dtype': 'bfloat16', 'batch': 4}
  done = dict(cell, phase='eval', event='cell', status='ok', median=1.0, min=1.0, max=1.0, times=[1.0])
  res = common.WorkerResult([{'event': 'progress', 'message': '', 'cell': dict(cell, phase='eval')}, done,
                             {'event': 'progress', 'message': '', 'cell': cell}], -9, '', timed_out=True)
  model_bench._note_stopped(res)
  assert res.of('cell')[-1] == {'event': 'cell', **cell, 'status': 'stopped',
                                'reason': 'time budget: the worker was stopped in this cell'}
  (row,) = [r for r in report.aggregate('I3DWTrans', [res.records]) if r['phase'] == 'train']
  assert row['ours']['status'] == 'stopped'
