"""The original's training step (golden fixture dsn_ntu_rgb, `train` block), float64, 1e-6 relative.

Runs the `crosscheck.py --train-step` path end to end: the weights go through
a real `.pth.tar` written by torch and read by the converter, the inputs
through an NCTHW `.npz` with `target`.
"""

import fcntl
import os

import numpy as np
import pytest

from rgbd_jax.tools import crosscheck

TOL = 1e-6


def _rel(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return np.linalg.norm(ours - ref) / np.linalg.norm(ref)


def _train_step(case, tmp):
  case.write_checkpoint(tmp / 'model_best.pth.tar')
  inputs = dict(case.inputs(), target=case.arrays['input/target'].astype(np.int64))
  np.savez(tmp / 'in.npz', **inputs)
  t = case.meta['train']
  config = case.config()
  config.common.learning_rate = t['lr']
  config.common.momentum = t['momentum']
  config.common.weight_decay = t['weight_decay']
  config.model.grad_clip = t['grad_clip']
  config.common.loss_lamdb = [float(x) for x in t['loss_lamdb']]
  config.common.label_smoothing = t['label_smoothing']
  config.common.distill = t['distill_weight']
  # the fixture's step has the distillation on: its epoch is past the warm-up
  assert case.epoch >= config.common.scheduler.warm_up_epochs
  code = crosscheck.main(config, str(tmp / 'model_best.pth.tar'), str(tmp / 'in.npz'),
                         str(tmp / 'partial.npz'), epoch=case.epoch, x64=True, mode='train_step',
                         keys=t['grad_keys'])
  assert code == 0
  os.replace(tmp / 'partial.npz', tmp / 'out.npz')  # complete, or absent


@pytest.fixture(scope='module')
def golden_step(golden_case, tmp_path_factory):
  case = golden_case('dsn_ntu_rgb')
  # Computed once per session, also across pytest-xdist workers (which share the base temp's parent).
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  tmp = root / 'golden_train_step'
  tmp.mkdir(exist_ok=True)
  with open(tmp / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (tmp / 'out.npz').exists():
      _train_step(case, tmp)
    with np.load(tmp / 'out.npz') as z:
      out = {k: z[k] for k in z.files}
  sd = case.state_dict()
  out.update({f'before/{k}': sd[k].astype(np.float64) for k in case.meta['train']['grad_keys']})
  ref = {k: v for k, v in case.arrays.items() if k.startswith('train/')}
  return case.meta, ref, out


def test_losses_logits_and_global_norm(golden_step):
  _, ref, out = golden_step
  for k in ('total_loss', 'ce_loss', 'distillation_loss', 'logits', 'grad_global_norm'):
    assert _rel(out[k], ref[f'train/{k}']) <= TOL, k
  # the global norm is far above grad_clip, so the step below exercises the clipping
  assert float(out['grad_global_norm']) > 5.0


def test_every_gradient_norm(golden_step):
  meta, ref, out = golden_step
  order = meta['train']['grad_norm_per_tensor_order']
  ours = np.array([out[f'grad_norm/{k}'] for k in order])
  want = ref['train/grad_norm_per_tensor']
  assert _rel(ours, want) <= TOL
  # and each tensor on its own (a zero-gradient tensor must be zero here too)
  nz = want > 0
  assert np.all(np.abs(ours[nz] - want[nz]) <= TOL * want[nz]), np.array(order)[nz][
      np.abs(ours[nz] - want[nz]) > TOL * want[nz]]
  np.testing.assert_array_equal(ours[~nz], 0.0)
  # every parameter is reported, nothing more
  assert sorted(k[len('grad_norm/'):] for k in out if k.startswith('grad_norm/')) == sorted(order)


def test_selected_gradients_and_sgd_step(golden_step):
  meta, ref, out = golden_step
  for k in meta['train']['grad_keys']:
    assert out[f'grad/{k}'].shape == ref[f'train/grad/{k}'].shape, k
    assert _rel(out[f'grad/{k}'], ref[f'train/grad/{k}']) <= TOL, k
    assert _rel(out[f'sgd_step/{k}'], ref[f'train/sgd_step/{k}']) <= TOL, k
    # the update itself (clip, then weight decay, then momentum, then lr), not
    # just the parameter it is small against
    ours = out[f'sgd_step/{k}'] - out[f'before/{k}']
    want = ref[f'train/sgd_step/{k}'] - out[f'before/{k}']
    assert _rel(ours, want) <= TOL, k


def test_batchnorm_running_statistics(golden_step):
  meta, ref, out = golden_step
  for bn in meta['train']['bn_keys']:
    for s in ('running_mean', 'running_var'):
      assert _rel(out[f'bn_after/{bn}.{s}'], ref[f'train/bn_after/{bn}.{s}']) <= TOL, (bn, s)
