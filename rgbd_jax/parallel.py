"""Devices, mesh and shardings; multi-process start-up.

One mesh axis, 'data', over every device of every process. The batch is
sharded on it, the train state replicated; under `jax.jit` the compiler inserts
the collectives (gradient all-reduce, BatchNorm statistics over the global
batch), so nothing here knows about the model.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'

_ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
_ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
_ENV_PROCESS_ID = 'JAX_PROCESS_ID'


def initialize_from_env() -> bool:
  """Starts jax.distributed when the environment describes a multi-process run.

  * `JAX_COORDINATOR_ADDRESS` (host:port), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`:
    any cluster (also several processes on one machine; CPU processes then use
    gloo collectives);
  * a multi-host Cloud TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts) or
    a SLURM job with several tasks: jax detects the rest itself.
  Returns True when it initialised.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator = os.environ.get(_ENV_COORDINATOR)
  if coordinator:
    for name in (_ENV_NUM_PROCESSES, _ENV_PROCESS_ID):
      if name not in os.environ:
        raise ValueError(f'{_ENV_COORDINATOR} is set but {name} is not')
    try:
      num, pid = int(os.environ[_ENV_NUM_PROCESSES]), int(os.environ[_ENV_PROCESS_ID])
    except ValueError as e:
      raise ValueError(f'{_ENV_NUM_PROCESSES}/{_ENV_PROCESS_ID} must be integers: {e}') from e
    if jax.config.jax_platforms in (None, '', 'cpu') or os.environ.get('JAX_PLATFORMS') == 'cpu':
      # CPU processes need a cross-process collectives implementation.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
  elif len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1 or (
      int(os.environ.get('SLURM_NTASKS', '1')) > 1):
    jax.distributed.initialize()
  else:
    return False
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices (all processes) with axis 'data'."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch_size(per_device: int, mesh: Mesh) -> int:
  """The original's batch_size is per device (per GPU); the global batch spans the mesh."""
  return int(per_device) * mesh.devices.size


def local_batch_size(per_device: int, mesh: Mesh) -> int:
  """This process's part of the global batch."""
  return int(per_device) * len([d for d in mesh.devices.flat
                                if d.process_index == jax.process_index()])


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy slices -> global arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def to_host(tree: Any) -> Any:
  """Global arrays -> full numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
