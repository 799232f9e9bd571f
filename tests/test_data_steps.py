"""The steps on the loader's uint8 batches: on-device preprocessing inside forward_train / eval_step
equals the host path, and the model.dtype='bfloat16' path trains and evaluates."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rgbd_jax.data import dynamic_image
from rgbd_jax.data import pipeline
from rgbd_jax.data import transforms
from rgbd_jax.models import build
from rgbd_jax.train import steps


def _tiny(tiny_config, **model):
  c = tiny_config(**model)
  c.model.sample_size = 32
  c.model.w = 4
  return c


def _host_inputs(batch, w):
  """The previous host path: transforms.normalise + dynamic_image.heatmap, clip by clip."""
  out = dict(batch)
  out['video'] = np.stack([transforms.normalise(c) for c in batch['video']])
  out['heatmap'] = np.stack([dynamic_image.heatmap(c, w) for c in batch['video']])[..., None]
  return out


def _init(model, config, seed=0):
  variables = jax.jit(functools.partial(build.init_variables, model, config))(jax.random.PRNGKey(seed))
  # FRP starts as the identity (weight [1, 0]): give the heatmap a say, so that it is checked too
  frp = variables['params']['frp_module']['rpconv1d']
  frp['weight'] = jnp.asarray([[[1.0], [0.5]]], frp['weight'].dtype)
  return variables


def test_steps_preprocess_uint8_batches_on_device(tiny_config):
  config = _tiny(tiny_config)
  model = build.build_model(config)
  variables = _init(model, config)
  batch = pipeline.example_batch(config, 2, train=False)
  assert batch['video'].dtype == np.uint8 and 'heatmap' not in batch
  hp = steps.hparams(1.0, 0.0)
  ours = jax.jit(functools.partial(steps.eval_step, model=model, config=config))(variables, batch, hp)
  host = jax.jit(functools.partial(steps.eval_step, model=model, config=config, preprocess=False))(
      variables, _host_inputs(batch, config.model.w), hp)
  np.testing.assert_allclose(np.asarray(ours['logits']), np.asarray(host['logits']), rtol=1e-4, atol=1e-4)

  train = {k: batch[k] for k in pipeline.batch_keys(config, train=True)}
  rngs = steps.step_rngs(jax.random.PRNGKey(1), 0)
  fwd = lambda b, preprocess: steps.forward_train(model, config, variables['params'], variables['batch_stats'],
                                                  b, hp, rngs, preprocess=preprocess)[0]
  loss = jax.jit(functools.partial(fwd, preprocess=True))(train)
  loss_host = jax.jit(functools.partial(fwd, preprocess=False))(_host_inputs(train, config.model.w))
  np.testing.assert_allclose(float(loss), float(loss_host), rtol=1e-4)
