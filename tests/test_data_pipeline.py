"""The grain pipeline: batches, padding, determinism, process sharding, workers, resume; TFDS = folders."""

import numpy as np
import pytest

from rgbd_jax import configs
from rgbd_jax.data import pipeline
from rgbd_jax.data import synthetic
from rgbd_jax.data import tfds_builder


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  c = configs.base_config()
  c.common.dataset = 'Synthetic'
  c.common.data = str(root / 'data')
  c.common.splits = str(root / 'data' / 'dataset_splits' / '@synthetic')
  c.common.num_workers = 0
  c.common.prefetch = 2
  c.dataset.synthetic_videos = (11, 5)
  c.dataset.synthetic_frames = (17, 30)
  c.dataset.synthetic_frame_size = (40, 32)
  c.dataset.resize = (40, 32)
  c.dataset.crop_size = 32
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.5
  c.model.sample_duration = 8
  c.model.sample_size = 32
  c.model.w = 4
  synthetic.ensure_dataset(c, workers=1, progress=False)
  return c


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_eval_batches_in_split_order_with_masked_padding(config):
  it = pipeline.make_loader(config, 'valid', global_batch_size=4, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == pipeline.steps_per_epoch(config, 'valid', 4) == 2
  b = batches[0]
  assert set(b) == {'video', 'label', 'mask', 'index'} == set(pipeline.batch_keys(config, train=False))
  assert b['video'].shape == (4, 8, 32, 32, 3) and b['video'].dtype == np.uint8  # no host heatmap
  assert b['label'].dtype == np.int32 and b['index'].dtype == np.int32 and b['mask'].dtype == bool
  index = np.concatenate([x['index'] for x in batches])
  mask = np.concatenate([x['mask'] for x in batches])
  np.testing.assert_array_equal(index, [0, 1, 2, 3, 4, -1, -1, -1])
  np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(np.concatenate([x['label'] for x in batches])[:5], [0, 1, 2, 3, 4])
  assert not batches[1]['video'][1:].any()
  assert batches[1]['video'].dtype == np.uint8  # padding rows: uint8 zeros too


def test_eval_batches_on_device_equal_the_host_path(config):
  """Loader uint8 batch -> on_device.model_inputs (what the steps run) = the previous host path,
  transforms.normalise + dynamic_image.heatmap per clip."""
  import jax
  from rgbd_jax.data import clips
  from rgbd_jax.data import dynamic_image
  from rgbd_jax.data import on_device
  from rgbd_jax.data import transforms
  prepare = jax.jit(lambda b: on_device.model_inputs(b, clips.UNIMODAL_KEYS, config.model.w))
  loader = clips.ClipLoader(config, 'valid')
  for batch in pipeline.make_loader(config, 'valid', global_batch_size=4, process_index=0, process_count=1):
    out = jax.device_get(prepare(batch))
    for j, row in enumerate(batch['index']):
      if row < 0:  # padding: zero clip, zero heatmap
        assert not out['heatmap'][j].any()
        continue
      u8 = loader.load_u8(int(row))['rgb']
      np.testing.assert_array_equal(batch['video'][j], u8)
      np.testing.assert_array_equal(out['video'][j], transforms.normalise(u8))
      host = dynamic_image.heatmap(u8, config.model.w)[..., None]
      assert np.linalg.norm(out['heatmap'][j] - host) <= 1e-6 * np.linalg.norm(host)
      np.testing.assert_allclose(out['heatmap'][j], host, rtol=0, atol=1e-5)


def test_eval_sharded_over_processes_equals_single_process(config):
  whole = list(pipeline.make_loader(config, 'valid', global_batch_size=4, process_index=0, process_count=1))
  parts = [list(pipeline.make_loader(config, 'valid', global_batch_size=4, process_index=p, process_count=2))
           for p in range(2)]
  for j, batch in enumerate(whole):
    for k in batch:
      np.testing.assert_array_equal(np.concatenate([parts[0][j][k], parts[1][j][k]]), batch[k], err_msg=k)


def test_train_is_deterministic_padded_and_reshuffled(config):
  kw = dict(global_batch_size=4, process_index=0, process_count=1)
  steps = pipeline.steps_per_epoch(config, 'train', 4)
  assert steps == 3  # 11 videos padded to 12
  a = take(pipeline.make_loader(config, 'train', **kw), 2 * steps)
  b = take(pipeline.make_loader(config, 'train', **kw), 2 * steps)
  assert_batches_equal(a, b)
  epoch0 = np.concatenate([x['index'] for x in a[:steps]])
  epoch1 = np.concatenate([x['index'] for x in a[steps:]])
  assert set(epoch0) == set(range(11)) and len(epoch0) == 12  # every video, one random repeat
  assert sorted(epoch0) == sorted(epoch1) and not np.array_equal(epoch0, epoch1)
  assert all(x['mask'].all() for x in a)
  c = take(pipeline.make_loader(config, 'train', seed=7, **kw), steps)
  assert not np.array_equal(np.concatenate([x['index'] for x in c]), epoch0)


def test_train_clips_do_not_depend_on_process_count(config):
  whole = take(pipeline.make_loader(config, 'train', global_batch_size=4, process_index=0, process_count=1), 3)
  halves = [take(pipeline.make_loader(config, 'train', global_batch_size=4, process_index=p, process_count=2), 3)
            for p in range(2)]
  for j in range(3):
    for k in whole[j]:
      np.testing.assert_array_equal(np.concatenate([halves[0][j][k], halves[1][j][k]]), whole[j][k], err_msg=k)


def test_resume_mid_epoch_from_state_with_workers(config):
  """Workers give the in-process batches; a saved state resumes exactly on a fresh iterator."""
  import grain
  in_process = take(pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1), 5)
  with_workers = config.copy_and_resolve_references()
  with_workers.common.num_workers = 2
  it = pipeline.make_loader(with_workers, 'train', global_batch_size=2, process_index=0, process_count=1)
  assert isinstance(it, grain.DatasetIterator)
  first = take(it, 3)
  state = it.get_state()
  assert state['next_batch'] == 3
  rest = take(it, 2)
  assert_batches_equal(first + rest, in_process)
  # The state does not depend on the workers: resume in-process (a machine with other cores).
  fresh = pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 2), rest)
  it.close()


def test_resume_in_process(config):
  it = pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1)
  take(it, 4)
  state = it.get_state()
  rest = take(it, 3)
  fresh = pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 3), rest)


def test_fusion_batches_have_both_streams(config):
  c = config.copy_and_resolve_references()
  c.model.Network = 'FusionNet'
  b = next(pipeline.make_loader(c, 'valid', global_batch_size=2, process_index=0, process_count=1))
  assert {'rgb', 'depth', 'label', 'mask', 'index'} == set(b) == set(pipeline.batch_keys(c, train=False))
  assert b['rgb'].shape == b['depth'].shape == (2, 8, 32, 32, 3) and b['rgb'].dtype == np.uint8
  assert not np.array_equal(b['rgb'], b['depth'])


def test_tfds_source_gives_identical_batches(config, tmp_path):
  c = config.copy_and_resolve_references()
  c.dataset.type = 'K'
  tfds_builder.prepare(c, str(tmp_path), ['train', 'valid'])
  t = c.copy_and_resolve_references()
  t.common.source = 'tfds'
  t.common.tfds_data_dir = str(tmp_path)
  for phase in ('valid', 'train'):
    folder = take(pipeline.make_loader(c, phase, global_batch_size=4, process_index=0, process_count=1), 2)
    built = take(pipeline.make_loader(t, phase, global_batch_size=4, process_index=0, process_count=1), 2)
    assert_batches_equal(folder, built)


def test_bad_batch_arguments(config):
  with pytest.raises(ValueError, match='multiple of process_count'):
    pipeline.make_loader(config, 'valid', global_batch_size=3, process_index=0, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.make_loader(config, 'valid', global_batch_size=4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="phase must be 'train' or 'valid'"):
    pipeline.make_loader(config, 'test', global_batch_size=4, process_index=0, process_count=1)


def test_state_of_another_loader_is_refused(config):
  it = pipeline.make_loader(config, 'train', global_batch_size=2, process_index=0, process_count=1)
  state = it.get_state()
  other = pipeline.make_loader(config, 'train', global_batch_size=4, process_index=0, process_count=1)
  with pytest.raises(ValueError, match='global_batch_size=2'):
    other.set_state(state)
  with pytest.raises(ValueError, match='not a data iterator state'):
    other.set_state({'next_index': 3})


_HOLD_BATCHES_AND_EXIT = '''
import sys
from rgbd_jax import configs
from rgbd_jax.data import pipeline
if __name__ == '__main__':
  c = configs.base_config()
  c.common.dataset, c.common.data, c.common.splits = 'Synthetic', sys.argv[1], sys.argv[2]
  c.common.num_workers, c.common.prefetch = 2, 2
  c.dataset.resize, c.dataset.crop_size = (40, 32), 32
  c.model.sample_duration, c.model.sample_size = 8, 32
  it = pipeline.make_loader(c, 'train', global_batch_size=2, process_index=0, process_count=1)
  held = [next(it) for _ in range(4)]  # still referenced, the iterator not closed, at exit
  print('ok', held[-1]['video'].dtype, type(held[-1]['video']).__name__)
'''


def test_workers_leave_no_shared_memory_at_exit(config, tmp_path):
  """A script that exits holding batches from worker processes, iterator not closed: no block left
  in /dev/shm, no resource_tracker warning, no error from a finaliser."""
  import os
  import pathlib
  import subprocess
  import sys
  script = tmp_path / 'hold.py'
  script.write_text(_HOLD_BATCHES_AND_EXIT)
  before = set(os.listdir('/dev/shm'))
  res = subprocess.run([sys.executable, str(script), config.common.data, config.common.splits],
                       capture_output=True, text=True, timeout=300,
                       cwd=pathlib.Path(__file__).resolve().parent.parent)
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'ok uint8 ndarray' in res.stdout
  assert 'leaked' not in res.stderr and 'Exception ignored' not in res.stderr, res.stderr[-3000:]
  assert not {f for f in set(os.listdir('/dev/shm')) - before if not f.startswith('sem.')}


def test_shared_memory_arrays_are_copied_out_and_unlinked():
  from grain.multiprocessing import SharedMemoryArray
  shared = SharedMemoryArray((3, 4), np.uint8)
  shared[:] = np.arange(12, dtype=np.uint8).reshape(3, 4)
  shared.unlink_on_del()  # as grain hands it to the main process
  name = shared.shm.name
  out = pipeline._own_arrays({'video': shared, 'label': np.arange(3)})
  assert type(out['video']) is np.ndarray and out['video'].tolist() == shared.tolist()
  assert not (pathlib_shm := __import__('pathlib').Path('/dev/shm') / name.lstrip('/')).exists(), pathlib_shm
  del shared  # its finaliser only closes the mapping now: no error
