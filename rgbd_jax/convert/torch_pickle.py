"""Reads PyTorch checkpoint files with numpy only, without running pickled code.

`torch.save` writes a zip archive: `<name>/data.pkl` is a pickle whose tensors
refer, through persistent ids, to raw storages `<name>/data/<key>`. A pickle
can name any importable callable and call it while loading, so this reader
resolves only a whitelist of data-only globals and rebuilds tensors itself.
Every other global is replaced by an inert stand-in that records its name and
never calls anything; the caller decides whether the part that held one can be
dropped (an optimizer state) or is an error (the weights).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

# torch storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64,
    'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:
  """Stands for `torch.<X>Storage` inside a persistent id."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class RefusedGlobal:
  """Inert stand-in for a global outside the whitelist.

  Calling it, building it or instantiating it only records arguments; nothing
  of the named callable ever runs; `qualname` says what was named.
  """
  qualname = '?'

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state

  def __repr__(self):
    return f'<refused global {self.qualname}>'


def _refused_class(qualname: str) -> type:
  return type('Refused', (RefusedGlobal,), {'qualname': qualname})


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  """numpy version of torch._utils._rebuild_tensor_v2 (a strided view, copied)."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray):
    raise ValueError(f'tensor storage is {type(storage).__name__}, not a storage')
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  if len(size) != len(stride):
    raise ValueError(f'tensor size {size} and stride {stride} differ in length')
  if any(s < 0 for s in size + stride) or storage_offset < 0:
    raise ValueError(f'negative size/stride/offset in tensor {size} {stride} {storage_offset}')
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else storage_offset - 1
  if last >= storage.size:
    raise ValueError(
        f'tensor of size {size}, stride {stride}, offset {storage_offset} reaches beyond its '
        f'storage of {storage.size} elements')
  base = storage[storage_offset:]
  view = np.lib.stride_tricks.as_strided(
      base, shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False)
  return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


# (module, name) -> what it resolves to. Only data: containers and our own tensor rebuilders.
_WHITELIST = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('builtins', 'complex'): complex,
    ('__builtin__', 'set'): set,
}


def _numpy_scalar(dtype, data=None):
  # numpy.core.multiarray.scalar: a numpy scalar from its dtype and raw bytes.
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise ValueError(f'numpy scalar with dtype {dtype!r} refused')
  return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(name, align=False, copy=True):
  dtype = np.dtype(name, align, copy)
  if dtype.hasobject:
    raise ValueError(f'numpy dtype {name!r} holds Python objects; refused')
  return dtype


def _latin1_bytes(text, encoding='latin1'):
  # Pickle protocol 2 writes bytes as `_codecs.encode(str, 'latin1')`.
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise ValueError(f'_codecs.encode({type(text).__name__}, {encoding!r}) refused')
  return text.encode('latin1')


_WHITELIST[('_codecs', 'encode')] = _latin1_bytes
for _mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
  _WHITELIST[(_mod, 'scalar')] = _numpy_scalar
_WHITELIST[('numpy', 'dtype')] = _numpy_dtype


class _Unpickler(pickle.Unpickler):
  """Unpickler with a whitelist; tensor storages come from `load_storage(key, dtype, numel)`."""

  def __init__(self, stream, load_storage, where: str):
    super().__init__(stream)
    self._load_storage = load_storage
    self._where = where
    self._storages: dict[str, np.ndarray] = {}
    self.storage_dtypes: dict[str, np.dtype] = {}

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _WHITELIST:
      return _WHITELIST[(module, name)]
    return _refused_class(f'{module}.{name}')

  def persistent_load(self, pid):
    # zip format: ('storage', type, key, location, numel); legacy format adds
    # view_metadata: None or (view_key, offset, view_numel) into the root storage.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == 'storage'):
      raise ValueError(f'{self._where}: unsupported persistent id {pid!r}')
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
      raise ValueError(f'{self._where}: unsupported storage {pid[1]!r} of {pid[4]!r} elements (key {key})')
    if key not in self._storages:
      self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
      self.storage_dtypes[key] = storage_type.dtype
    storage = self._storages[key]
    if storage.dtype != storage_type.dtype:
      storage = storage.view(storage_type.dtype)
    view = pid[5] if len(pid) == 6 else None
    if view is not None:
      _, offset, size = view
      if offset < 0 or size < 0 or offset + size > storage.size:
        raise ValueError(f'{self._where}: storage view {view} outside storage {key} of {storage.size} elements')
      storage = storage[offset:offset + size]
    return storage


def contains_refused(obj: Any) -> list[str]:
  """Names of refused globals found anywhere inside `obj` (a loaded pickle)."""
  found = []
  stack = [obj]
  seen = set()
  while stack:
    x = stack.pop()
    if id(x) in seen:
      continue
    seen.add(id(x))
    if isinstance(x, RefusedGlobal) or (isinstance(x, type) and issubclass(x, RefusedGlobal)):
      found.append(x.qualname)
    elif isinstance(x, dict):
      stack.extend(x.keys())
      stack.extend(x.values())
      stack.extend(getattr(x, '__dict__', {}).values())
    elif isinstance(x, (list, tuple, set, frozenset)):
      stack.extend(x)
  return sorted(set(found))


def _load(unpickler: _Unpickler, path: str, what: str) -> Any:
  try:
    return unpickler.load()
  except ValueError as e:
    if str(e).startswith(str(path)):
      raise
    raise ValueError(f'{path}: {what}: {e}') from e
  except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
    raise ValueError(f'{path}: cannot unpickle {what}: {e}') from e


def _read_zip(path: str, archive: zipfile.ZipFile) -> Any:
  pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
  if len(pickles) != 1:
    raise ValueError(f'{path}: expected one <name>/data.pkl in the archive, found {pickles}')
  prefix = pickles[0][:-len('data.pkl')]
  try:
    order = archive.read(prefix + 'byteorder').decode().strip()
  except KeyError:
    order = 'little'
  if order != 'little':
    raise ValueError(f'{path}: byte order {order!r} is not supported')

  def load_storage(key, dtype, numel):
    entry = f'{prefix}data/{key}'
    try:
      raw = archive.read(entry)
    except KeyError:
      raise ValueError(f'{path}: storage {entry} is missing from the archive') from None
    if len(raw) < numel * dtype.itemsize:
      raise ValueError(f'{path}: storage {entry} holds {len(raw)} bytes, needs {numel} x {dtype.itemsize}')
    return np.frombuffer(raw, dtype=dtype, count=numel)

  return _load(_Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage, path), path, pickles[0])


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_legacy(path: str, data: bytes) -> Any:
  """torch < 1.6 files: magic, protocol, sys info, the object, storage keys, then raw storages."""
  f = io.BytesIO(data)
  no_storage = lambda key, dtype, numel: None
  header = [_load(_Unpickler(f, no_storage, path), path, 'header') for _ in range(3)]
  if header[0] != _LEGACY_MAGIC or header[1] != 1001:
    raise ValueError(f'{path}: not a torch checkpoint (neither a zip archive nor the legacy format)')
  if not (isinstance(header[2], dict) and header[2].get('little_endian', True)):
    raise ValueError(f'{path}: big-endian legacy checkpoints are not supported')
  start = f.tell()
  # The raw storages follow the object, so a first pass (on zero storages) finds where it ends.
  first = _Unpickler(f, lambda key, dtype, numel: np.zeros(numel, dtype), path)
  _load(first, path, 'object')
  keys = _load(_Unpickler(f, no_storage, path), path, 'storage keys')
  if not isinstance(keys, list) or set(map(str, keys)) != set(first.storage_dtypes):
    raise ValueError(f'{path}: storage key list does not match the storages the object uses')
  storages = {}
  for key in map(str, keys):
    dtype = first.storage_dtypes[key]
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f'{path}: truncated before storage {key}')
    numel = int.from_bytes(head, 'little', signed=True)
    raw = f.read(numel * dtype.itemsize)
    if numel < 0 or len(raw) < numel * dtype.itemsize:
      raise ValueError(f'{path}: storage {key} is truncated')
    storages[key] = np.frombuffer(raw, dtype=dtype)

  def load_storage(key, dtype, numel):
    if storages[key].size < numel:
      raise ValueError(f'{path}: storage {key} holds {storages[key].size} elements, needs {numel}')
    return storages[key]

  return _load(_Unpickler(io.BytesIO(data[start:]), load_storage, path), path, 'object')


def read_checkpoint(path: str) -> Any:
  """The object a torch checkpoint file holds, with tensors as numpy arrays.

  Reads the zip format of torch >= 1.6 and the legacy format before it.
  Raises FileNotFoundError / ValueError naming the file. Globals outside the
  whitelist come back as `RefusedGlobal` stand-ins (see `contains_refused`).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint not found: {path}')
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      return _read_zip(path, archive)
  with open(path, 'rb') as f:
    data = f.read()
  if data[:1] != b'\x80':
    raise ValueError(f'{path}: not a torch checkpoint (neither a zip archive nor a pickle)')
  return _read_legacy(path, data)
