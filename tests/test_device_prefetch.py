"""DevicePrefetch: the loop's batches on the device ahead of their step, with an exact resume position."""

import json

import grain
import jax
import numpy as np
import pytest

from rgbd_jax import configs
from rgbd_jax import parallel
from rgbd_jax.data import pipeline
from rgbd_jax.data import synthetic
from rgbd_jax.train import device_prefetch


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  c = configs.base_config()
  c.common.dataset = 'Synthetic'
  c.common.data = str(root / 'data')
  c.common.splits = str(root / 'data' / 'dataset_splits' / '@synthetic')
  c.common.num_workers = 0
  c.dataset.synthetic_videos = (5, 5)
  c.dataset.synthetic_frames = (17, 20)
  c.dataset.synthetic_frame_size = c.dataset.resize = (24, 20)
  c.dataset.crop_size = 16
  c.model.sample_duration = 4
  c.model.sample_size = 16
  c.model.w = 2
  synthetic.ensure_dataset(c, workers=1, progress=False)
  return c


def _host(config):
  return pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1)


def _prefetch(config, size):
  keys = pipeline.batch_keys(config, train=True)
  return device_prefetch.DevicePrefetch(_host(config), parallel.make_mesh(), keys, size=size), keys


@pytest.mark.parametrize('size', [1, 2, 3])
def test_batches_are_the_loaders_on_the_device_and_the_position_counts_batches_taken(config, size):
  host = _host(config)
  expected = [next(host) for _ in range(5)]
  host.close()
  it, keys = _prefetch(config, size)
  mesh = parallel.make_mesh()
  try:
    for k in range(3):
      batch = next(it)
      assert set(batch) == set(keys)
      for key in keys:
        assert isinstance(batch[key], jax.Array) and batch[key].sharding == parallel.batch_sharding(mesh)
        np.testing.assert_array_equal(np.asarray(batch[key]), expected[k][key])
      # the loader is `size` batches ahead at most; the saved position is the batches taken
      assert it.get_state()['next_batch'] == k + 1
      assert it._host.get_state()['next_batch'] == k + size  # pylint: disable=protected-access
  finally:
    it.close()


def test_resume_from_a_saved_position_gives_the_following_batches(config, tmp_path):
  it, keys = _prefetch(config, 2)
  taken = [next(it) for _ in range(2)]
  del taken
  # grain's own Orbax handler (what the checkpoints use) writes its position as JSON
  grain.checkpoint.CheckpointHandler().save(tmp_path, args=grain.checkpoint.CheckpointSave(it))
  saved = json.loads(next(tmp_path.glob('process_*.json')).read_text())
  assert saved['next_batch'] == 2
  following = [jax.device_get(next(it)) for _ in range(2)]
  it.close()

  resumed, _ = _prefetch(config, 3)  # another buffer size resumes at the same batch
  next(resumed)  # some batches taken before the restore: the restore drops the buffer
  grain.checkpoint.CheckpointHandler().restore(tmp_path, args=grain.checkpoint.CheckpointRestore(resumed))
  try:
    for want in following:
      got = jax.device_get(next(resumed))
      for key in keys:
        np.testing.assert_array_equal(got[key], want[key])
  finally:
    resumed.close()


def test_size_must_be_positive(config):
  with pytest.raises(ValueError, match='>= 1'):
    device_prefetch.DevicePrefetch(iter(()), parallel.make_mesh(), ('video',), size=0)


def test_a_finite_loader_hands_out_every_batch_then_stops(config):
  """Evaluation: every batch of the pass, in order, then StopIteration (the buffer drained first)."""
  def valid():
    return pipeline.make_loader(config, 'valid', global_batch_size=2, process_index=0, process_count=1)
  host = valid()
  expected = list(host)
  host.close()
  assert len(expected) >= 2
  keys = pipeline.batch_keys(config, train=False)
  it = device_prefetch.DevicePrefetch(valid(), parallel.make_mesh(), keys, size=3)
  got = [jax.device_get(b) for b in it]
  with pytest.raises(StopIteration):
    next(it)
  it.close()
  assert len(got) == len(expected)
  for g, e in zip(got, expected):
    for key in keys:
      np.testing.assert_array_equal(g[key], e[key])


def test_host_results_fetch_each_step_after_the_next_is_dispatched_and_stop_before_a_batch():
  from rgbd_jax.train import evaluation
  events = []

  def step(batch):
    events.append(('step', batch['k']))
    return {'k': np.asarray(batch['k'])}
  for out in evaluation.host_results(({'k': k} for k in range(3)), step):
    events.append(('got', int(out['k'])))
  assert events == [('step', 0), ('step', 1), ('got', 0), ('step', 2), ('got', 1), ('got', 2)]
  stops = iter([False, False, True])
  with pytest.raises(evaluation._Stopped):  # pylint: disable=protected-access
    list(evaluation.host_results(({'k': k} for k in range(3)), step, lambda: next(stops)))
