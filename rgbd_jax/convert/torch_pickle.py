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
  of the named callable ever runs. `refused` lists what was named.
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
  """Unpickler with a whitelist; storages are read from the archive on demand."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, where: str):
    super().__init__(io.BytesIO(data))
    self._archive = archive
    self._prefix = prefix
    self._where = where
    self._storages: dict[str, np.ndarray] = {}
    self.refused: list[str] = []

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _WHITELIST:
      return _WHITELIST[(module, name)]
    qualname = f'{module}.{name}'
    self.refused.append(qualname)
    return _refused_class(qualname)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise ValueError(f'{self._where}: unsupported persistent id {pid!r}')
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise ValueError(f'{self._where}: storage of unsupported type {storage_type!r} (key {key})')
    if key not in self._storages:
      entry = f'{self._prefix}data/{key}'
      try:
        raw = self._archive.read(entry)
      except KeyError:
        raise ValueError(f'{self._where}: storage {entry} is missing from the archive') from None
      if len(raw) < numel * storage_type.dtype.itemsize:
        raise ValueError(
            f'{self._where}: storage {entry} holds {len(raw)} bytes, needs '
            f'{numel} x {storage_type.dtype.itemsize}')
      self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype, count=numel)
    storage = self._storages[key]
    if storage.dtype != storage_type.dtype:
      storage = storage.view(storage_type.dtype)
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


def read_checkpoint(path: str) -> Any:
  """The object a torch checkpoint file holds, with tensors as numpy arrays.

  Raises FileNotFoundError / ValueError naming the file. Globals outside the
  whitelist come back as `RefusedGlobal` stand-ins (see `contains_refused`).
  """
  try:
    archive = zipfile.ZipFile(path)
  except FileNotFoundError:
    raise FileNotFoundError(f'checkpoint not found: {path}') from None
  except zipfile.BadZipFile:
    with open(path, 'rb') as f:
      head = f.read(2)
    kind = 'a legacy (torch < 1.6, non-zip) checkpoint' if head[:1] == b'\x80' else 'not a torch checkpoint'
    raise ValueError(
        f'{path}: {kind}; only the zip format of torch >= 1.6 is read '
        '(re-save it with a recent torch: torch.save(torch.load(f), f))') from None
  with archive:
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
    unpickler = _Unpickler(archive.read(pickles[0]), archive, prefix, path)
    try:
      return unpickler.load()
    except ValueError as e:
      if str(e).startswith(str(path)):
        raise
      raise ValueError(f'{path}: {pickles[0]}: {e}') from e
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as e:
      raise ValueError(f'{path}: cannot unpickle {pickles[0]}: {e}') from e
