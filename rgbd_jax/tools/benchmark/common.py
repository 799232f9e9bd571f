"""What both sides of the model benchmark share, importing neither JAX nor torch.

The sweep's workers (ours: `python -m rgbd_jax.tools.benchmark.model --worker SPEC`, the
original: `python -m rgbd_jax.tools.benchmark.original --spec SPEC`) each load the same
config (file + overrides), time the same cells (phase, dtype, per-device batch) and print one
protocol line per event on stdout (`@@bench {json}`); anything else they print is passed
through. This module holds the config loading, the cell timing and the protocol.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import ml_collections

from rgbd_jax import configs

REPO = pathlib.Path(__file__).resolve().parents[3]
PREFIX = '@@bench '
PHASES = ('train', 'eval')
DTYPES = ('float32', 'bfloat16')
NETWORKS = ('I3DWTrans', 'FusionNet')


def cores() -> int:
  """CPU cores this process may run on."""
  return max(1, len(os.sched_getaffinity(0)))


# ----------------------------------------------------------------------------- config

def _resolve_path(path: str) -> pathlib.Path:
  """A config path as given, else relative to the repository root (configs/ntu.py from anywhere)."""
  p = pathlib.Path(path)
  if p.exists() or p.is_absolute():
    return p
  return REPO / p if (REPO / p).exists() else p


def _parse_value(default: Any, text: str, key: str) -> Any:
  """`text` as the type of the config's current value (as ml_collections' --config.KEY=VALUE)."""
  if isinstance(default, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'--config.{key}: expected a bool, got {text!r}')
  if isinstance(default, int):
    return int(text)
  if isinstance(default, float):
    return float(text)
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(default, (list, tuple)):
    if not isinstance(value, (list, tuple)):
      raise ValueError(f'--config.{key}: expected a sequence, got {text!r}')
    return type(default)(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies 'section.key=value' overrides (the value parsed as the current value's type)."""
  for item in overrides:
    key, sep, text = item.partition('=')
    if not sep:
      raise ValueError(f'override {item!r}: expected KEY=VALUE (e.g. model.dtype=bfloat16)')
    *parents, leaf = key.split('.')
    node = config
    for name in parents:
      if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
        raise KeyError(f'override {item!r}: {name!r} is not a section of the config')
      node = node[name]
    if leaf not in node:
      raise KeyError(f'override {item!r}: {leaf!r} is not a key of {".".join(parents) or "the config"} '
                     f'(known: {sorted(node.keys())})')
    node[leaf] = _parse_value(node[leaf], text, key)
  return config


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file (`file.py[:arg]`), or an original YAML file; then the overrides."""
  file, _, arg = path.partition(':')
  resolved = _resolve_path(file)
  if resolved.suffix in ('.yml', '.yaml'):
    config = configs.from_yaml(str(resolved))
  else:
    if not resolved.exists():
      raise FileNotFoundError(f'config file not found: {file}')
    spec = importlib.util.spec_from_file_location(f'_bench_config_{resolved.stem}', resolved)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
  return apply_overrides(config, overrides)


def cell_config(config: ml_collections.ConfigDict, dtype: str, size: int, frames: int) -> ml_collections.ConfigDict:
  """A copy of the config for one cell: compute dtype, H = W and T."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.dtype, c.model.sample_size, c.model.sample_duration = dtype, int(size), int(frames)
  return c


# ----------------------------------------------------------------------------- timing

def time_runs(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls of `fn` (which must wait for its own results), after `warmup`."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def spread(values: Sequence[float]) -> dict[str, float]:
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def is_oom(error: BaseException) -> bool:
  """An out-of-memory error of XLA (RESOURCE_EXHAUSTED) or torch."""
  text = f'{type(error).__name__}: {error}'
  return any(s in text for s in ('RESOURCE_EXHAUSTED', 'OutOfMemoryError', 'out of memory', 'Out of memory'))


def past(deadline: float | None) -> bool:
  return deadline is not None and time.time() >= deadline


# ----------------------------------------------------------------------------- protocol

def emit(record: dict[str, Any]) -> None:
  """One protocol line on stdout (a worker's result or progress)."""
  sys.stdout.write(PREFIX + json.dumps(record) + '\n')
  sys.stdout.flush()


def read_spec(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


class WorkerResult:
  """What a worker process printed: its protocol records, exit status and stderr's tail."""

  def __init__(self, records: list[dict[str, Any]], returncode: int, stderr: str, timed_out: bool):
    self.records, self.returncode, self.stderr, self.timed_out = records, returncode, stderr, timed_out

  def of(self, event: str) -> list[dict[str, Any]]:
    return [r for r in self.records if r.get('event') == event]

  @property
  def ok(self) -> bool:
    return self.returncode == 0 and not self.timed_out


def run_worker(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None,
               on_record: Callable[[dict[str, Any]], None] | None = None, keep_stderr: int = 200) -> WorkerResult:
  """Runs a worker; passes its stderr through as it comes (and keeps the last lines), parses its records."""
  proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          bufsize=1)
  tail: list[str] = []

  def pump_stderr():
    for line in proc.stderr:
      sys.stderr.write(line)
      sys.stderr.flush()
      tail.append(line)
      del tail[:-keep_stderr]

  pump = threading.Thread(target=pump_stderr, daemon=True)
  pump.start()
  records: list[dict[str, Any]] = []
  timed_out = False
  timer = None
  if timeout is not None:
    def kill():
      nonlocal timed_out
      timed_out = True
      proc.kill()
    timer = threading.Timer(max(1.0, timeout), kill)
    timer.start()
  try:
    for line in proc.stdout:
      if line.startswith(PREFIX):
        try:
          record = json.loads(line[len(PREFIX):])
        except json.JSONDecodeError:
          sys.stdout.write(line)
          continue
        records.append(record)
        if on_record is not None:
          on_record(record)
      else:
        sys.stdout.write(line)  # the original's own prints
        sys.stdout.flush()
    proc.wait()
  finally:
    if timer is not None:
      timer.cancel()
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  pump.join(timeout=5)
  return WorkerResult(records, proc.returncode, ''.join(tail), timed_out)


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of a worker: ours, with the repository importable and Python unbuffered."""
  env = dict(os.environ)
  paths = [str(REPO)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
  env['PYTHONPATH'] = os.pathsep.join(dict.fromkeys(paths))
  env['PYTHONUNBUFFERED'] = '1'
  env.update(extra or {})
  return env
