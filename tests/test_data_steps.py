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


# ------------------------------------------------------------------------------------ bfloat16

def test_bfloat16_trains_end_to_end_with_float32_state(tiny_config, tmp_path):
  """model.dtype='bfloat16': loader uint8 batches -> jitted training step (on-device preprocessing
  in bfloat16, heatmap float32); parameters, optimiser state and BatchNorm statistics stay float32,
  losses are finite and the parameters move."""
  from rgbd_jax import parallel
  from rgbd_jax.data import synthetic
  from rgbd_jax.train import optim
  from rgbd_jax.train import state as state_lib
  config = _tiny(tiny_config, dtype='bfloat16')
  config.common.dataset = 'Synthetic'
  config.common.data = str(tmp_path / 'data')
  config.common.splits = str(tmp_path / 'data' / 'dataset_splits' / '@synthetic')
  config.common.num_workers = 0
  config.dataset.synthetic_videos, config.dataset.synthetic_frames = (6, 2), (17, 24)
  config.dataset.synthetic_frame_size = config.dataset.resize = (40, 32)
  config.dataset.crop_size = 32
  config.model.num_classes = synthetic.NUM_CLASSES
  synthetic.ensure_dataset(config, workers=1, progress=False)

  mesh = parallel.make_mesh()
  global_batch = parallel.global_batch_size(2, mesh)
  model = build.build_model(config)
  tx, schedule = optim.make_optimizer(config, steps_per_epoch=3)
  state = state_lib.create_train_state(model, config, tx, mesh, jax.random.PRNGKey(0))
  before = jax.device_get(state.params)
  step = steps.jit_train_step(model, config, tx, schedule)
  loader = pipeline.make_loader(config, 'train', global_batch_size=global_batch, process_index=0, process_count=1)
  keys = pipeline.batch_keys(config, train=True)
  losses = []
  for _ in range(3):
    batch = next(loader)
    assert batch['video'].dtype == np.uint8
    state, metrics = step(state, parallel.shard_batch({k: batch[k] for k in keys}, mesh), steps.hparams(1.0, 1.0))
    losses.append(float(metrics['loss']))
  loader.close()
  assert np.all(np.isfinite(losses)), losses
  leaves = {'params': state.params, 'batch_stats': state.batch_stats, 'opt_state': state.opt_state}
  for name, tree in leaves.items():
    floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats), (name, {str(x.dtype) for x in floats})
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, jax.device_get(state.params))
  assert any(jax.tree.leaves(moved))


def test_bfloat16_golden_logits_and_crosscheck_writes_float32(golden_case, tmp_path):
  """dsn_ntu_rgb in evaluation mode through the crosscheck command with model.dtype='bfloat16': the
  logits within 2e-2 (relative L2) of the reference, which the float32 run matches to ~1e-6
  (tests/test_golden_models.py); the .npz holds float32 arrays (not bfloat16 as raw |V2 bytes)."""
  from rgbd_jax.tools import crosscheck
  case = golden_case('dsn_ntu_rgb')
  checkpoint = str(tmp_path / 'model_best.pth.tar')
  case.write_checkpoint(checkpoint)
  np.savez(tmp_path / 'in.npz', **case.inputs())
  config = case.config()
  config.model.dtype = 'bfloat16'
  assert crosscheck.main(config, checkpoint, str(tmp_path / 'in.npz'), str(tmp_path / 'out.npz'), epoch=case.epoch) == 0
  with np.load(tmp_path / 'out.npz') as z:
    out = {k: z[k] for k in z.files}
  assert all(v.dtype == np.float32 for v in out.values()), {k: v.dtype for k, v in out.items()}
  expected = case.expected()
  for k in ('logits', 'xs', 'xm', 'xl'):
    rel = np.linalg.norm(out[k] - expected[k]) / np.linalg.norm(expected[k])
    print(f'{k}: bfloat16 vs reference relative L2 {rel:.2e}')
    assert rel <= 2e-2, (k, rel)
