"""Batches on the device ahead of the step that reads them.

The training loop and the evaluation pass take their batches from `DevicePrefetch`: each host batch (uint8 clips, labels) is
turned into global arrays sharded over the mesh (`parallel.shard_batch`, an asynchronous host-to-device
copy) `size - 1` steps before the step that reads it, so the copy runs while the previous steps
compute and the step never waits on it.

The iterator's position, which checkpoints save, is the number of batches the loop has *taken*:
batches still in the buffer were read from the loader but not trained on, so they are subtracted,
and `set_state` drops the buffer and restarts the loader there. Resuming is exact, whatever `size`.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import grain
import jax

from rgbd_jax import parallel

# Batches held on the device: the one the step reads and the next one, already copying.
DEFAULT_SIZE = 2


class DevicePrefetch(grain.DatasetIterator):
  """Wraps a host batch iterator (rgbd_jax.data.pipeline.BatchIterator, or any iterator of dicts of
  arrays); yields dicts of the `keys` (None: every key) as global jax arrays sharded on the mesh's
  'data' axis."""

  def __init__(self, host: Any, mesh: jax.sharding.Mesh, keys: Sequence[str] | None = None,
               size: int = DEFAULT_SIZE):
    super().__init__()
    self._buffer: collections.deque = collections.deque()
    self._host, self._mesh, self._size = host, mesh, int(size)
    self._keys = None if keys is None else tuple(keys)
    if self._size < 1:
      self._host = None
      raise ValueError(f'device prefetch size must be >= 1, got {size}')

  def __next__(self) -> dict[str, jax.Array]:
    while len(self._buffer) < self._size:
      try:
        batch = next(self._host)
      except StopIteration:  # a finite loader (evaluation): hand out what is buffered, then stop
        break
      keys = batch if self._keys is None else self._keys
      self._buffer.append(parallel.shard_batch({k: batch[k] for k in keys}, self._mesh))
    if not self._buffer:
      raise StopIteration
    return self._buffer.popleft()

  def get_state(self) -> dict:
    state = dict(self._host.get_state())
    state['next_batch'] = int(state['next_batch']) - len(self._buffer)
    return state

  def set_state(self, state: dict) -> None:
    self._buffer.clear()
    self._host.set_state(state)

  def close(self) -> None:
    """Drops the prefetched batches and closes the loader (a second call does nothing)."""
    self._buffer.clear()
    host, self._host = self._host, None
    if host is not None:
      host.close()
