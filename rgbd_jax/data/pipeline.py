"""The grain input pipeline: global sample order, per-process slices, workers, prefetch.

The order of samples is a pure function of (seed, epoch, position), fixed
before any work is split up:

* training: the usable videos, padded with random repeats to a multiple of the
  global batch (as the original does), permuted afresh each epoch; epochs are
  concatenated into one infinite stream. The clip at global position g
  (epoch e = g // L, k = g % L) is drawn with a generator seeded from (seed, e, k).
* evaluation: one pass in split-file order; the last global batch is padded
  with masked-out zero samples.

With `dataset.skip_bad_videos`, a video that cannot be loaded is logged and
skipped: in evaluation its row is masked out (mask False, index -1); in
training the next usable video of the list takes its place (a masked row would
still be trained on).

Global batch j holds global positions [j*B, (j+1)*B); process p takes the
p-th slice of B / process_count of them. Worker processes and prefetch threads
only change who computes an element, never what it is, and the iterator's
state (`get_state()` / `set_state()`) resumes mid-epoch exactly.

Batches hold uint8 clips (normalisation and the FRP heatmap run on the device,
`on_device.model_inputs`). Worker processes (`common.num_workers`) each compute
whole batches with one OpenCV thread and pass them pickled through grain's
queue (no shared memory: see `_NO_SHARED_MEMORY`); in-process (0 workers),
`common.prefetch` reader threads compute batches ahead (Pillow and OpenCV
release the GIL). The iterator closes its workers when it is collected or at
interpreter exit at the latest; `close()` does it at once.
"""

from __future__ import annotations

import functools
import math
import weakref

from absl import flags
import grain
import ml_collections
import numpy as np

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import sources

# Tags that keep the seeds of the different draws apart.
_PAD, _PERMUTATION, _CLIP, _REPLACEMENT = range(4)
_INFINITE = 1 << 62
_MAX_REPLACEMENTS = 10  # training: usable videos tried in place of a skipped one


def _check_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} must be a positive multiple of '
                     f'process_count={process_count}')
  return global_batch_size // process_count


def padded_length(num_videos: int, global_batch_size: int) -> int:
  return math.ceil(num_videos / global_batch_size) * global_batch_size


class _Plan:
  """Global position -> (record number, per-clip generator seed)."""

  def __init__(self, num_videos: int, global_batch_size: int, seed: int, train: bool, shuffle: bool):
    self.num_videos = num_videos
    self.seed = int(seed)
    self.train = train
    self.shuffle = shuffle
    if train:
      extra = padded_length(num_videos, global_batch_size) - num_videos
      pad = np.random.default_rng([self.seed, _PAD]).integers(0, num_videos, extra)
      self.order = np.concatenate([np.arange(num_videos), pad])
    else:
      self.order = np.arange(num_videos)
    self.epoch_length = len(self.order)

  @functools.lru_cache(maxsize=4)
  def _epoch_order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return self.order
    return self.order[np.random.default_rng([self.seed, _PERMUTATION, epoch]).permutation(self.epoch_length)]

  def __call__(self, g: int) -> tuple[int | None, np.random.Generator | None]:
    epoch, k = divmod(g, self.epoch_length)
    if not self.train and epoch > 0:
      return None, None  # padding of the last evaluation batch
    record = int(self._epoch_order(epoch)[k])
    rng = np.random.default_rng([self.seed, _CLIP, epoch, k]) if self.train else None
    return record, rng

  def replacement_rng(self, g: int, attempt: int) -> np.random.Generator:
    epoch, k = divmod(g, self.epoch_length)
    return np.random.default_rng([self.seed, _REPLACEMENT, epoch, k, attempt])


class _Element:
  """Local position (in this process's stream) -> one sample dict."""

  def __init__(self, loader: clips.ClipLoader, plan: _Plan, local_batch: int, global_batch: int,
               process_index: int):
    self.loader, self.plan = loader, plan
    self.local_batch, self.global_batch, self.process_index = local_batch, global_batch, process_index

  def global_position(self, i: int) -> int:
    step, j = divmod(int(i), self.local_batch)
    return step * self.global_batch + self.process_index * self.local_batch + j

  def __call__(self, i: int) -> dict:
    g = self.global_position(i)
    record, rng = self.plan(g)
    if record is None:
      return self.loader.empty(i)
    out = self.loader(record, rng)
    if out['mask'] or not self.plan.train:
      return out
    # A skipped video (dataset.skip_bad_videos) in training: a masked zero clip would still be
    # trained on, so the next usable video of the list takes its place (deterministically).
    for attempt in range(1, _MAX_REPLACEMENTS + 1):
      alternative = (record + attempt) % self.plan.num_videos
      out = self.loader(alternative, self.plan.replacement_rng(g, attempt))
      if out['mask']:
        return out
    raise ValueError(f'{_MAX_REPLACEMENTS + 1} consecutive videos from entry {record} of '
                     f'{self.loader.source.path} could not be loaded (see the warnings above)')


def _num_videos(config: ml_collections.ConfigDict, phase: str) -> int:
  return len(sources.make_source(config, phase).records)


def steps_per_epoch(config: ml_collections.ConfigDict, phase: str, global_batch_size: int) -> int:
  """Global batches per epoch (training: the padded list; evaluation: the last batch partly padded)."""
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be positive, got {global_batch_size}')
  return math.ceil(_num_videos(config, phase) / global_batch_size)


def make_dataset(config: ml_collections.ConfigDict, phase: str, *, global_batch_size: int,
                 seed: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool | None = None,
                 start_batch: int = 0) -> grain.IterDataset:
  """The grain IterDataset behind `make_loader`: this process's batches from `start_batch` on."""
  spec = _Spec.create(config, phase, global_batch_size, seed, process_index, process_count, shuffle)
  return spec.dataset(start_batch)


class _Spec:
  """Everything that fixes the batches: the sample plan and this process's slice."""

  def __init__(self, config, phase, global_batch_size, seed, process_index, process_count, shuffle):
    self.config, self.phase = config, phase
    self.global_batch_size, self.seed = global_batch_size, seed
    self.local_batch = _check_batch(global_batch_size, process_count)
    self.loader = clips.ClipLoader(config, phase)
    train = phase == 'train'
    self.plan = _Plan(len(self.loader), global_batch_size, seed, train, shuffle)
    self.steps = _INFINITE // self.local_batch if train else math.ceil(len(self.loader) / global_batch_size)
    self.element = _Element(self.loader, self.plan, self.local_batch, global_batch_size, process_index)

  @classmethod
  def create(cls, config, phase, global_batch_size, seed, process_index, process_count, shuffle):
    if process_index is None or process_count is None:
      import jax  # only to learn this process's place; nothing is put on devices here
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index={process_index} out of range for process_count={process_count}')
    seed = int(config.common.seed if seed is None else seed)
    shuffle = (phase == 'train') if shuffle is None else bool(shuffle)
    return cls(config, phase, global_batch_size, seed, process_index, process_count, shuffle)

  def dataset(self, start_batch: int) -> grain.IterDataset:
    if not 0 <= start_batch <= self.steps:
      raise ValueError(f'start batch {start_batch} out of range (0..{self.steps})')
    # A batch is one element of the MapDataset: worker processes then each compute whole batches,
    # and which rows form a batch does not depend on the number of workers.
    ds = grain.MapDataset.range(start_batch, self.steps).map(_Batch(self.element, self.local_batch))
    prefetch = max(int(self.config.common.prefetch), 1)
    workers = int(self.config.common.num_workers)
    # In-process, `prefetch` threads compute batches ahead (decoding and OpenCV release the GIL);
    # with worker processes, each computes its batches one at a time.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if workers else prefetch, prefetch_buffer_size=prefetch))
    if workers > 0:
      # grain's worker start-up reads absl flags; a library caller (tests, notebooks) may not have parsed any.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      # Batches travel pickled through grain's queue, not through shared memory: see _NO_SHARED_MEMORY.
      ds = grain.experimental.WithOptionsIterDataset(
          ds, grain.experimental.DatasetOptions(min_shm_size=_NO_SHARED_MEMORY))
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch),
                          worker_init_fn=_init_worker)
    return ds


# grain copies every array of a worker's batch into a fresh POSIX shared-memory block unless it is
# smaller than `min_shm_size`. Measured here (packed 224x224 training clips, one worker): a fresh
# 9.6 MB block costs the worker ~14 ms per clip more than pickling the batch through the queue
# (62 against 48 ms of CPU per clip; in-process 43-51), the page faults of new tmpfs pages
# dominating; the main process spends ~4.7 ms per clip either way. So no array goes through shared
# memory: nothing can leak there either.
_NO_SHARED_MEMORY = 1 << 62


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Workers are the parallelism: no OpenCV thread pool inside each of them."""
  del worker_index, worker_count
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)


class _Batch:
  """Batch number -> this process's batch: its rows (`_Element`) stacked once (grain's `.batch()`
  would add a thread pool for the copy)."""

  def __init__(self, element: '_Element', local_batch: int):
    self.element, self.local_batch = element, local_batch

  def __call__(self, step: int) -> dict:
    rows = [self.element(int(step) * self.local_batch + j) for j in range(self.local_batch)]
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _own_arrays(batch: dict) -> dict:
  """The batch with any shared-memory array (grain's SharedMemoryArray) copied out and its block
  unlinked at once.

  The pipeline sends nothing through shared memory (_NO_SHARED_MEMORY); should a grain version do
  it regardless, blocks still referenced, or still queued in grain's deletion thread pool, when the
  interpreter exits would never be unlinked, and Python's resource tracker would report "leaked
  shared_memory objects". Copied out and unlinked here, nothing outlives the batch.
  """
  from grain.multiprocessing import SharedMemoryArray  # pylint: disable=g-import-not-at-top
  out = {}
  for key, value in batch.items():
    if isinstance(value, SharedMemoryArray):
      out[key] = np.array(value)  # a plain ndarray copy
      value.shm.unlink()
      value._unlink_on_del = False  # pylint: disable=protected-access  # unlinked already
    else:
      out[key] = value
  return out


class BatchIterator(grain.DatasetIterator):
  """This process's batches; its state is the number of batches taken (plus what must not change).

  The state does not depend on worker processes or prefetching, so a run can resume with another
  `common.num_workers`; `set_state` restarts the grain pipeline at the saved batch.
  """

  def __init__(self, spec: _Spec, start_batch: int = 0):
    super().__init__()
    self._spec = spec
    self._next_batch = start_batch
    # The grain iterator, in a holder that a finaliser closes when this iterator is collected or,
    # at the latest, when the interpreter exits, before module teardown: grain's own finalisers
    # run later and fail there (worker processes, prefetch threads) when nobody called close().
    self._current = [iter(spec.dataset(start_batch))]
    self._finalizer = weakref.finalize(self, _close_grain_iterator, self._current)

  def __next__(self) -> dict:
    if self._current[0] is None:
      raise ValueError('this data iterator was closed')
    batch = _own_arrays(next(self._current[0]))
    self._next_batch += 1
    return batch

  def get_state(self) -> dict:
    return {'next_batch': self._next_batch, 'global_batch_size': self._spec.global_batch_size,
            'seed': self._spec.seed, 'phase': self._spec.phase}

  def set_state(self, state: dict) -> None:
    for key in ('global_batch_size', 'seed', 'phase'):
      if key in state and state[key] != self.get_state()[key]:
        raise ValueError(f'data iterator state was saved with {key}={state[key]!r}, '
                         f'this loader has {key}={self.get_state()[key]!r}')
    if 'next_batch' not in state:
      raise ValueError(f'not a data iterator state of rgbd_jax.data.pipeline: {state!r}')
    _close_grain_iterator(self._current)
    self._next_batch = int(state['next_batch'])
    self._current[0] = iter(self._spec.dataset(self._next_batch))

  def close(self) -> None:
    """Stops the worker processes and prefetch threads (also done at exit; a second call does nothing)."""
    # no module global here: grain's DatasetIterator.__del__ may call this during interpreter teardown
    it, self._current[0] = self._current[0], None
    if it is not None:
      it.close()


def _close_grain_iterator(current: list) -> None:
  it, current[0] = current[0], None
  if it is not None:
    it.close()


def make_loader(config: ml_collections.ConfigDict, phase: str, *, global_batch_size: int,
                seed: int | None = None, process_index: int | None = None,
                process_count: int | None = None, shuffle: bool | None = None) -> BatchIterator:
  """An iterator of batches (dicts of numpy arrays) for this process; see the module docstring.

  Keys: 'video' (b, T, S, S, 3) uint8, 'label' (b,) int32, 'mask' (b,) bool, 'index' (b,) int32
  (entry row in the split file, -1 for padding); the fusion network gets 'rgb' and 'depth'
  instead of 'video'. Normalisation and the FRP heatmap are computed on the device by the step
  (`rgbd_jax.data.on_device.model_inputs`); padding rows are uint8 zeros.
  Defaults: seed = config.common.seed, this JAX process, shuffle = (phase == 'train').
  The iterator is a grain DatasetIterator; get_state() / set_state() resume exactly.
  """
  spec = _Spec.create(config, phase, global_batch_size, seed, process_index, process_count, shuffle)
  return BatchIterator(spec)


def batch_keys(config: ml_collections.ConfigDict, train: bool) -> tuple[str, ...]:
  """The keys of the loader's batches the jitted steps read: the uint8 clips and 'label' (training),
  plus 'mask' and 'index' (evaluation)."""
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  clip_keys = tuple(dict.fromkeys(keys[s][0] for s in layouts.streams(config)))
  return clip_keys + (('label',) if train else ('label', 'mask', 'index'))


def example_batch(config: ml_collections.ConfigDict, batch_size: int, train: bool = True,
                  seed: int = 0) -> dict[str, np.ndarray]:
  """A random batch shaped and typed like the loader's: uint8 clips of random grey levels, labels
  (and 'mask', 'index' for evaluation); for benchmarks and compile checks."""
  rng = np.random.default_rng(seed)
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  t, s = int(config.model.sample_duration), int(config.model.sample_size)
  out = {}
  for stream in layouts.streams(config):
    out[keys[stream][0]] = rng.integers(0, 256, (batch_size, t, s, s, 3), dtype=np.uint8)
  out['label'] = (np.arange(batch_size) % max(1, configs.num_classes(config))).astype(np.int32)
  if not train:
    out['mask'] = np.ones((batch_size,), bool)
    out['index'] = np.arange(batch_size, dtype=np.int32)
  return out
