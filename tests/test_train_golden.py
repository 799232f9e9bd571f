"""The original's training step (golden fixture dsn_ntu_rgb, `train` block), float64, 1e-6 relative.

The weights go through a real `.pth.tar` written by torch and read by the
converter, as a user's checkpoint would.
"""

import json
import os
import zlib

import jax
import numpy as np
import pytest
import torch

from rgbd_jax import configs
from rgbd_jax.convert import torch_import
from rgbd_jax.train import step_check

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden')
TOL = 1e-6


def _synthetic_weight(seed, key, shape):
  # The fixture's recipe for its weights (tests/golden/README.md).
  rng = np.random.default_rng([seed, zlib.crc32(key.encode('utf-8'))])
  if key.endswith('num_batches_tracked'):
    return np.array(1000, np.int64)
  if key.endswith('running_var'):
    v = rng.uniform(0.5, 1.5, shape)
  elif key.endswith('running_mean'):
    v = rng.normal(0.0, 0.1, shape)
  elif 'pos_embedding' in key or 'cls_token' in key:
    v = rng.normal(0.0, 1.0, shape)
  elif key.endswith('weight') and len(shape) == 1:
    v = 1.0 + rng.normal(0.0, 0.1, shape)
  elif key.endswith('weight'):
    v = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
  else:
    v = rng.normal(0.0, 0.02, shape)
  return np.asarray(v).astype(np.float32)


def _rel(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return np.linalg.norm(ours - ref) / np.linalg.norm(ref)


@pytest.fixture(scope='module')
def golden_step(tmp_path_factory):
  meta = json.load(open(os.path.join(GOLDEN, 'dsn_ntu_rgb.json')))
  ref = np.load(os.path.join(GOLDEN, 'dsn_ntu_rgb.npz'))
  state_dict = {k: torch.from_numpy(_synthetic_weight(meta['seed'], k, tuple(shape)))
                for k, shape, _ in meta['layout']}
  path = str(tmp_path_factory.mktemp('golden') / 'model_best.pth.tar')
  torch.save({'model': state_dict, 'optimizer': {}, 'epoch': 100, 'bestacc': 0.0}, path)

  t = meta['train']
  config = configs.base_config()  # the base config holds NTU.yml's values
  config.model.num_classes = meta['overrides']['num_classes']
  config.model.Network = meta['overrides']['Network']
  config.model.dtype = 'float64'
  config.model.sample_size = meta['input']['S']
  config.model.sample_duration = meta['input']['T']
  config.common.learning_rate = t['lr']
  config.common.momentum = t['momentum']
  config.common.weight_decay = t['weight_decay']
  config.model.grad_clip = t['grad_clip']
  config.common.loss_lamdb = [float(x) for x in t['loss_lamdb']]
  config.common.label_smoothing = t['label_smoothing']
  config.common.distill = t['distill_weight']
  epoch = meta['overrides']['epoch']
  # the fixture's step has the distillation on: this epoch is past the warm-up
  assert epoch >= config.common.scheduler.warm_up_epochs

  with jax.enable_x64(True):
    config, variables = torch_import.load_torch_checkpoint(path, config)
    x = (ref['input/x_u8'].astype(np.float32) - 127.5) / 128
    g = ref['input/garr_u8'].astype(np.float32) / 64
    batch = {'video': np.transpose(x, (0, 2, 3, 4, 1)).astype(np.float64),
             'heatmap': np.transpose(g, (0, 2, 3, 4, 1)).astype(np.float64),
             'label': ref['input/target']}
    out = step_check.train_step_outputs(config, variables, batch, epoch=epoch, keys=t['grad_keys'])
  before = {k: state_dict[k].numpy().astype(np.float64) for k in t['grad_keys']}
  return meta, ref, dict(out, **{f'before/{k}': v for k, v in before.items()})


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
