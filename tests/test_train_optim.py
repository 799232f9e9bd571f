"""Optimisers and schedules against torch (the original's optimiser code paths)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from rgbd_jax import configs
from rgbd_jax.train import optim



@pytest.fixture(autouse=True)
def _float64():
  # torch runs these in float64; scoped so other tests in the worker keep float32.
  with jax.enable_x64(True):
    yield


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  params = {'w': rng.normal(size=(5, 4)), 'b': rng.normal(size=(4,)), 'scale': rng.normal(size=(3,))}
  x = rng.normal(size=(8, 5))
  y = rng.normal(size=(8, 4))
  return params, x, y


def _loss_jax(p, x, y):
  h = jnp.tanh(x @ p['w'] + p['b'])
  return 10.0 * jnp.mean((h * jnp.sum(p['scale']) - y) ** 2) + jnp.sum(p['scale'] ** 2)


def _loss_torch(p, x, y):
  h = torch.tanh(x @ p['w'] + p['b'])
  return 10.0 * torch.mean((h * torch.sum(p['scale']) - y) ** 2) + torch.sum(p['scale'] ** 2)


def _config(opt, clip=0.5, lr=0.1, wd=3e-3):
  c = configs.base_config()
  c.common.optim = opt
  c.common.learning_rate = lr
  c.common.weight_decay = wd
  c.common.momentum = 0.9
  c.common.scheduler.warm_up_epochs = 0
  c.common.scheduler.name = 'ReduceLR'   # constant lr: the comparison is about the update rule
  c.model.grad_clip = clip
  return c


def _torch_run(opt, params, x, y, clip, lr, wd, steps):
  tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
  tx, ty = torch.tensor(x), torch.tensor(y)
  if opt == 'SGD':
    o = torch.optim.SGD(tp.values(), lr, momentum=0.9, weight_decay=wd)
  elif opt == 'Adam':
    o = torch.optim.Adam(tp.values(), lr=lr)
  else:
    o = torch.optim.AdamW(tp.values(), lr=lr)
  norms = []
  for _ in range(steps):
    o.zero_grad()
    _loss_torch(tp, tx, ty).backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(list(tp.values()), clip)))
    o.step()
  return {k: v.detach().numpy() for k, v in tp.items()}, norms


@pytest.mark.parametrize('opt', ['SGD', 'Adam', 'AdamW'])
def test_optimizer_matches_torch(opt):
  params, x, y = _problem()
  clip, lr, wd = 0.5, 0.1, 3e-3
  tx, _ = optim.make_optimizer(_config(opt, clip, lr, wd), steps_per_epoch=10)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  norms = []
  for _ in range(3):
    g = jax.grad(_loss_jax)(p, x, y)
    norms.append(float(optax.tree.norm(g)))
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
  want, want_norms = _torch_run(opt, params, x, y, clip, lr, wd, 3)
  # clipping must have been active, else the test would not test it
  assert min(want_norms) > clip
  np.testing.assert_allclose(norms, want_norms, rtol=1e-10)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-9, atol=1e-12, err_msg=k)
  # and the update moved the parameters (not a no-op)
  assert max(np.abs(want[k] - params[k]).max() for k in params) > 1e-3


def test_clip_below_threshold_is_identity():
  g = {'a': jnp.array([0.3, 0.4])}  # norm 0.5
  clipped, _ = optim.clip_by_global_norm_torch(5.0).update(g, ())
  np.testing.assert_array_equal(np.asarray(clipped['a']), np.asarray(g['a']))


def test_schedule_warmup_then_cosine():
  c = configs.base_config()
  c.common.learning_rate, c.common.learning_rate_min = 0.01, 1e-4
  c.common.epochs, c.common.scheduler.warm_up_epochs = 10, 2
  spe = 5
  sched = optim.learning_rate_schedule(c, spe)
  warm, total = 2 * spe, 10 * spe
  assert float(sched(0)) == pytest.approx(1e-8)
  # linear in between
  assert float(sched(warm // 2)) == pytest.approx((1e-8 + 0.01) / 2, rel=1e-6)
  assert float(sched(warm)) == pytest.approx(0.01, rel=1e-6)
  mid = warm + (total - warm) // 2
  assert float(sched(mid)) == pytest.approx(1e-4 + 0.5 * (0.01 - 1e-4), rel=1e-5)
  assert float(sched(total)) == pytest.approx(1e-4, rel=1e-5)
  values = np.array([float(sched(i)) for i in range(total + 1)])
  assert np.all(np.diff(values[:warm + 1]) > 0) and np.all(np.diff(values[warm:]) <= 0)


def test_bad_optimizer_and_scheduler_names():
  c = configs.base_config()
  c.common.optim = 'RMSprop'
  with pytest.raises(ValueError, match='RMSprop'):
    optim.make_optimizer(c, 3)
  c = configs.base_config()
  c.common.scheduler.name = 'step'
  with pytest.raises(ValueError, match='step'):
    optim.learning_rate_schedule(c, 3)


def test_reduce_on_plateau_matches_torch():
  metrics = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25, 0.25,
             0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
  p = torch.nn.Parameter(torch.zeros(1))
  o = torch.optim.SGD([p], lr=0.01)
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
      o, mode='max', factor=0.1, patience=2, threshold=0.0001, threshold_mode='rel',
      cooldown=3, min_lr=0.00001, eps=1e-08)
  ours = optim.ReduceLROnPlateau(0.01, patience=2)
  seen = []
  for m in metrics:
    ref.step(m)
    seen.append(ours.step(m))
    assert seen[-1] == pytest.approx(o.param_groups[0]['lr'], rel=1e-12)
  assert len(set(seen)) >= 3  # it did reduce, twice, down to the floor
  assert min(seen) == pytest.approx(1e-5)


def test_distill_weight_follows_train_py():
  c = configs.base_config()
  c.common.scheduler.warm_up_epochs = 3
  c.common.distill = 1.0
  # tools/train.py: `if epoch < warm_up_epochs - 1: warm-up lr else: distill on`
  weights = [optim.distill_weight(c, e) for e in range(5)]
  assert weights == [0.0 if e < 3 - 1 else 1.0 for e in range(5)]
