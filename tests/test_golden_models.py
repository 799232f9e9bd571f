"""The port against the original's own outputs (tests/golden), through real .pth.tar checkpoints.

Each golden case writes its synthetic weights with torch.save exactly as the
original's training script does, reads them back with the converter and runs
the crosscheck command's code in float64 (every stored output within 1e-6
relative L2 error) and in float32 (logits and losses within 1e-3). One test
per case does both precisions, so a parallel run never computes a case twice.
"""

import subprocess
import sys

import numpy as np
import pytest

from rgbd_jax.tools import crosscheck

CASES = ('dsn_ntu_rgb', 'dsn_nvgesture_depth_seheads2', 'fusion_nvgesture')


def _run(case, checkpoint, x64):
  with crosscheck.precision(x64):
    config, model, variables = crosscheck.prepare(checkpoint, case.config(), x64)
    return crosscheck.run_mode('forward', config, model, variables, case.inputs(), epoch=case.epoch, x64=x64)


def _table(errors, failed):
  return '\n'.join(f'  {k:28s} {e:.3e}{"  FAIL" if k in failed else ""}' for k, e in errors.items())


@pytest.mark.parametrize('name', CASES)
def test_golden_outputs(name, golden_case, tmp_path):
  case = golden_case(name)
  checkpoint = str(tmp_path / 'model_best.pth.tar')
  case.write_checkpoint(checkpoint)
  expected = case.expected()

  ours64 = _run(case, checkpoint, x64=True)
  assert set(expected) <= set(ours64), f'outputs missing: {sorted(set(expected) - set(ours64))}'
  errors, failed = crosscheck.compare(ours64, expected, x64=True)
  assert set(errors) == set(expected)
  print(f'\n{name} float64 relative L2 errors:\n{_table(errors, failed)}')
  assert not failed, f'float64 beyond {crosscheck.TOLERANCE_X64}:\n{_table(errors, failed)}'

  ours32 = _run(case, checkpoint, x64=False)
  assert all(v.dtype != np.float64 for v in ours32.values())
  errors, failed = crosscheck.compare(ours32, expected, x64=False)
  headline = [k for k in errors if crosscheck.is_headline(k)]
  assert len(headline) >= 4
  print(f'{name} float32 relative L2 errors:\n{_table(errors, failed)}')
  assert not failed, f'float32 beyond {crosscheck.TOLERANCE_F32}:\n{_table(errors, failed)}'


def test_crosscheck_command_end_to_end(golden_case, tmp_path):
  """scripts/crosscheck.py as a user runs it: checkpoint + NCTHW npz in, npz out, compared (exit 0)."""
  case = golden_case('dsn_nvgesture_depth_seheads2')
  checkpoint = str(tmp_path / 'model_best.pth.tar')
  case.write_checkpoint(checkpoint)
  np.savez(tmp_path / 'in.npz', **case.inputs())
  # The NvGesture config with the default SEHeads and class count: the checkpoint's values win.
  cmd = [sys.executable, 'scripts/crosscheck.py', '--checkpoint', checkpoint, '--inputs', str(tmp_path / 'in.npz'),
         '--out', str(tmp_path / 'out.npz'), '--config', 'configs/nvgesture.py', '--config.dataset.type=K',
         f'--epoch={case.epoch}', '--x64', '--compare', str(case.golden_path)]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(case.repo))
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  assert 'checkpoint overrides model.SEHeads: 1 -> 2' in res.stderr
  assert f'{len(case.expected())} compared, 0 beyond tolerance' in res.stdout
  with np.load(tmp_path / 'out.npz') as z:
    assert z['logits'].dtype == np.float64 and z['logits'].shape == case.expected()['logits'].shape


def test_compare_flags_errors_beyond_tolerance():
  ref = {'expected/logits': np.array([[1.0, 2.0]]), 'expected/rcm_out': np.ones((1, 2, 3)),
         'expected/ce_loss': np.array(2.0)}
  close = {'logits': np.array([[1.0, 2.0 + 1e-9]]), 'rcm_out': np.ones((1, 2, 3)) * 1.01,
           'ce_loss': np.array(2.0), 'only_ours': np.zeros(2)}
  errors, failed = crosscheck.compare(close, ref, x64=True)
  assert set(errors) == {'logits', 'rcm_out', 'ce_loss'}
  assert failed == ['rcm_out'] and errors['rcm_out'] == pytest.approx(0.01)
  errors, failed = crosscheck.compare(close, ref, x64=False)  # float32: intermediates are informative only
  assert failed == []
  errors, failed = crosscheck.compare({'ce_loss': np.array(2.01)}, ref, x64=False)
  assert failed == ['ce_loss']


def test_inputs_are_checked_by_name(tmp_path, tiny_config):
  config = tiny_config()
  t = config.model.sample_duration
  np.savez(tmp_path / 'missing.npz', video=np.zeros((1, 3, t, 32, 32), np.float32))
  with pytest.raises(ValueError, match=r"missing input key\(s\) \['heatmap'\]"):
    crosscheck.read_inputs(str(tmp_path / 'missing.npz'), config)
  np.savez(tmp_path / 'nthwc.npz', video=np.zeros((1, t, 32, 32, 3), np.float32),
           heatmap=np.zeros((1, 1, t, 32, 32), np.float32))
  with pytest.raises(ValueError, match=r'video must be \(B, 3, T=16, H, W\)'):
    crosscheck.read_inputs(str(tmp_path / 'nthwc.npz'), config)
  np.savez(tmp_path / 'batch.npz', video=np.zeros((2, 3, t, 32, 32), np.float32),
           heatmap=np.zeros((1, 1, t, 32, 32), np.float32))
  with pytest.raises(ValueError, match='heatmap has shape'):
    crosscheck.read_inputs(str(tmp_path / 'batch.npz'), config)
  fusion = tiny_config('FusionNet')
  np.savez(tmp_path / 'fusion.npz', rgb=np.zeros((1, 3, t, 32, 32), np.float32))
  with pytest.raises(ValueError, match='depth_heatmap'):
    crosscheck.read_inputs(str(tmp_path / 'fusion.npz'), fusion)
  with pytest.raises(FileNotFoundError):
    crosscheck.read_inputs(str(tmp_path / 'none.npz'), config)
