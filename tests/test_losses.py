"""Losses against torch's own implementations of the same formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rgbd_jax.models import losses


def _rand(shape, seed, scale=3.0):
  return np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)


def test_label_smoothing_ce_matches_torch():
  logits = _rand((5, 7), 0)
  labels = np.array([0, 6, 3, 3, 1])
  ours = losses.label_smoothing_ce(jnp.asarray(logits), jnp.asarray(labels), eps=0.1)
  # torch's label_smoothing spreads eps over all classes: (1-eps)*NLL + eps*mean_j(-log p_j).
  ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels),
                                          label_smoothing=0.1)
  np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-6)


def test_mask_equals_loss_on_real_examples():
  logits = _rand((6, 4), 1)
  labels = np.array([0, 1, 2, 3, 0, 1])
  mask = np.array([True, True, False, True, False, True])
  masked = losses.label_smoothing_ce(jnp.asarray(logits), jnp.asarray(labels), 0.1, jnp.asarray(mask))
  subset = losses.label_smoothing_ce(jnp.asarray(logits[mask]), jnp.asarray(labels[mask]), 0.1)
  np.testing.assert_allclose(float(masked), float(subset), rtol=1e-6)


def test_bce_matches_torch_including_the_log_clamp():
  x = np.array([-200.0, -30.0, -2.0, 0.0, 0.5, 30.0, 200.0], np.float32)
  p = torch.sigmoid(torch.from_numpy(x))
  for target in (0.0, 1.0):
    ref = torch.nn.BCELoss()(p[:, None], torch.full((len(x), 1), target))
    ours = losses.binary_cross_entropy(jax.nn.sigmoid(jnp.asarray(x)), target)
    np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-6)
  # Saturated probabilities: the gradient stays finite (torch's clamp, no NaN).
  g = jax.grad(lambda v: losses.binary_cross_entropy(jax.nn.sigmoid(v), 0.0))(jnp.asarray(x))
  assert np.all(np.isfinite(np.asarray(g)))


def _fusion_out(b=4, c=8, k=5, seed=2):
  r = np.random.default_rng(seed)
  f = lambda *s: r.normal(0, 1, s).astype(np.float32)
  return {'fusion_logits': f(b, k), 'logits_rgb': f(b, k), 'logits_depth': f(b, k),
          'bce_logit_rgb': f(b), 'bce_logit_depth': f(b), 'de': f(b, c), 'F_M': f(b, c),
          'F_K': f(b, c), 'distillation_loss': np.float32(0.7)}


def test_fusion_losses_match_torch_formulas():
  out = _fusion_out()
  labels = np.array([0, 4, 2, 1])
  t = {k: torch.from_numpy(np.asarray(v)) for k, v in out.items()}
  tl = torch.from_numpy(labels)
  ce = sum(torch.nn.functional.cross_entropy(t[k], tl, label_smoothing=0.1)
           for k in ('fusion_logits', 'logits_rgb', 'logits_depth'))
  bce = (torch.nn.BCELoss()(torch.sigmoid(t['bce_logit_rgb'])[:, None], torch.ones(4, 1))
         + torch.nn.BCELoss()(torch.sigmoid(t['bce_logit_depth'])[:, None], torch.zeros(4, 1)))
  mse = torch.nn.MSELoss()(t['de'], t['F_M']) + torch.nn.MSELoss()(t['de'], t['F_K'])
  got = losses.fusion_losses({k: jnp.asarray(v) for k, v in out.items()}, jnp.asarray(labels),
                             eps=0.1, distill_weight=2.0, mse_weight=3.0)
  np.testing.assert_allclose(float(got['ce']), ce.item(), rtol=1e-6)
  np.testing.assert_allclose(float(got['bce']), bce.item(), rtol=1e-6)
  np.testing.assert_allclose(float(got['mse']), mse.item(), rtol=1e-6)
  np.testing.assert_allclose(float(got['distillation']), 0.7, rtol=1e-6)
  np.testing.assert_allclose(float(got['total']), ce.item() + bce.item() + 3 * mse.item() + 2 * 0.7,
                             rtol=1e-5)


def test_fusion_losses_mask_drops_padded_rows():
  out = _fusion_out(b=5)
  labels = np.array([0, 4, 2, 1, 3])
  mask = np.array([True, False, True, True, False])
  full = losses.fusion_losses({k: jnp.asarray(v) for k, v in out.items()}, jnp.asarray(labels),
                              mask=jnp.asarray(mask))
  sub = {k: (v[mask] if np.ndim(v) else v) for k, v in out.items()}
  ref = losses.fusion_losses({k: jnp.asarray(v) for k, v in sub.items()}, jnp.asarray(labels[mask]))
  for k in ('ce', 'bce', 'mse', 'total'):
    np.testing.assert_allclose(float(full[k]), float(ref[k]), rtol=1e-6)


def test_dsn_losses_weights_and_distillation():
  r = np.random.default_rng(3)
  out = {k: jnp.asarray(r.normal(0, 2, (3, 6)).astype(np.float32)) for k in ('logits', 'xs', 'xm', 'xl')}
  out['distillation_loss'] = jnp.float32(1.5)
  labels = jnp.asarray([1, 5, 0])
  got = losses.dsn_losses(out, labels, loss_lamdb=[1, .5, .5, .5], distill_weight=0.0, eps=0.1)
  ces = [float(losses.label_smoothing_ce(out[k], labels)) for k in ('logits', 'xs', 'xm', 'xl')]
  expected_ce = ces[0] + 0.5 * (ces[1] + ces[2] + ces[3])
  np.testing.assert_allclose(float(got['ce']), expected_ce, rtol=1e-6)
  np.testing.assert_allclose(float(got['total']), expected_ce, rtol=1e-6)  # weight 0 in warm-up
  got1 = losses.dsn_losses(out, labels, loss_lamdb=[1, .5, .5, .5], distill_weight=1.0, eps=0.1)
  np.testing.assert_allclose(float(got1['total']), expected_ce + 1.5, rtol=1e-6)
  with pytest.raises(ValueError, match='loss_lamdb'):
    losses.dsn_losses(out, labels, loss_lamdb=[1, .5], distill_weight=1.0)


def test_bfloat16_outputs_give_float32_losses_of_their_values():
  """A bfloat16 model's logits and features: the losses are computed in float32 on the bf16 values
  (the torch reference sees the same values in float32), not in bfloat16."""
  out = {k: jnp.asarray(v).astype(jnp.bfloat16) for k, v in _fusion_out().items()}
  labels = np.array([0, 4, 2, 1])
  got = losses.fusion_losses(out, jnp.asarray(labels), eps=0.1, distill_weight=2.0, mse_weight=3.0)
  assert all(v.dtype == jnp.float32 for v in got.values()), {k: v.dtype for k, v in got.items()}
  t = {k: torch.from_numpy(np.array(v.astype(jnp.float32))) for k, v in out.items()}
  tl = torch.from_numpy(labels)
  ce = sum(torch.nn.functional.cross_entropy(t[k], tl, label_smoothing=0.1)
           for k in ('fusion_logits', 'logits_rgb', 'logits_depth'))
  mse = torch.nn.MSELoss()(t['de'], t['F_M']) + torch.nn.MSELoss()(t['de'], t['F_K'])
  np.testing.assert_allclose(float(got['ce']), ce.item(), rtol=1e-6)
  np.testing.assert_allclose(float(got['mse']), mse.item(), rtol=1e-6)
  # float64 stays float64
  with jax.enable_x64(True):
    ce64 = losses.label_smoothing_ce(jnp.asarray(_rand((3, 5), 9), jnp.float64), jnp.asarray([0, 1, 2]))
    assert ce64.dtype == jnp.float64
