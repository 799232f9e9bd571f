"""Large effective batches on few devices: stem rematerialisation and gradient accumulation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rgbd_jax.models import build
from rgbd_jax.train import optim

FAST = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _loss_and_grads(config, variables, video, heat, labels):
  model = build.build_model(config)

  def loss(params):
    out, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, video, heat, train=True,
                         temp=0.07, rngs={'dropout': jax.random.PRNGKey(1), 'frames': jax.random.PRNGKey(2)},
                         mutable=['batch_stats'])
    return build.network(config).losses(config, out, labels, 1.0)['total']
  return jax.jit(jax.value_and_grad(loss), compiler_options=FAST)(variables['params'])


def test_remat_changes_memory_not_results(tiny_config):
  plain, remat = tiny_config(), tiny_config(remat=True)
  variables = jax.jit(lambda r: build.init_variables(build.build_model(plain), plain, r))(jax.random.PRNGKey(0))
  # the same variable tree: checkpoints do not depend on the setting
  assert jax.tree.structure(build.variable_shapes(remat)) == jax.tree.structure(variables)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.uniform(-1, 1, (2, 16, 32, 32, 3)).astype(np.float32))
  heat = jnp.asarray(rng.uniform(0, 1, (2, 16, 32, 32, 1)).astype(np.float32))
  labels = jnp.asarray([1, 3])
  l1, g1 = _loss_and_grads(plain, variables, video, heat, labels)
  l2, g2 = _loss_and_grads(remat, variables, video, heat, labels)
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_accumulation_updates_once_every_k_steps_with_the_mean_gradient(tiny_config):
  config = tiny_config()
  config.common.accumulation_steps = 3
  config.common.scheduler.warm_up_epochs = 0
  tx, schedule = optim.make_optimizer(config, steps_per_epoch=12)
  plain_config = tiny_config()
  plain_config.common.scheduler.warm_up_epochs = 0
  plain_tx, plain_schedule = optim.make_optimizer(plain_config, steps_per_epoch=4)
  # the lr of micro-step s is the plain schedule's at update s // 3
  for s in (0, 2, 3, 7, 11):
    assert float(schedule(s)) == pytest.approx(float(plain_schedule(s // 3)))
  params = {'w': jnp.ones((4,)), 'b': jnp.zeros((2,))}
  grads = [{'w': jnp.full((4,), g), 'b': jnp.full((2,), -g)} for g in (1.0, 2.0, 6.0)]
  state = tx.init(params)
  p = params
  for i, g in enumerate(grads):
    updates, state = tx.update(g, state, p, lr_scale=1.0)
    p = optax.apply_updates(p, updates)
    if i < 2:
      np.testing.assert_array_equal(p['w'], params['w'])  # nothing moves before the k-th step
  plain_updates, _ = plain_tx.update({'w': jnp.full((4,), 3.0), 'b': jnp.full((2,), -3.0)}, plain_tx.init(params),
                                     params, lr_scale=1.0)
  np.testing.assert_allclose(p['w'], optax.apply_updates(params, plain_updates)['w'], rtol=1e-6)


def test_frozen_streams_get_no_update_not_even_weight_decay():
  from rgbd_jax import configs  # pylint: disable=g-import-not-at-top
  config = configs.base_config()
  config.model.Network = 'UMDRFusion'
  frozen = build.network(config).frozen
  assert frozen
  tx, _ = optim.make_optimizer(config, steps_per_epoch=10, learning_rate=0.1)
  params = {frozen[0]: {'w': jnp.ones((3,))}, 'fusion': {'w': jnp.ones((3,))}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params, lr_scale=1.0)
  np.testing.assert_array_equal(updates[frozen[0]]['w'], 0.0)
  assert np.all(np.asarray(updates['fusion']['w']) < 0)
