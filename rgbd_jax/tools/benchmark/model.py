r"""Network speed: the training step and evaluation forward `train.py` runs, beside the original.

    python scripts/benchmark.py model                                   # ntu config, this machine's defaults
    python scripts/benchmark.py model --config.model.Network=FusionNet --dtypes bfloat16 --batches 1,2,4
    python scripts/benchmark.py model --original /path/to/MotionRGBD --rounds 3 --json out.json

Ours is what training and evaluation run: the config (`--config FILE`, default
configs/ntu.py, with `--config.section.key=value` overrides, or `--set
section.key=value`), `state.create_train_state`, `optim.make_optimizer`,
`steps.jit_train_step` on `pipeline.example_batch(train=True)` sharded with
`parallel.shard_batch` over `parallel.make_mesh()`, and `steps.jit_eval_step` on
`example_batch(train=False)` with the state's variables. Each shape is compiled
once (`lower().compile()` of those jitted functions), then run `--warmup` times
and timed `--repeats` times, each run waiting for the whole new state
(`jax.block_until_ready`).

The sweep: for each per-device batch of `--batches` (ascending), for each of
`--dtypes`, the evaluation forward then the training step. The first
out-of-memory (XLA's RESOURCE_EXHAUSTED) ends that dtype: it is reported as OOM
with the largest batch that ran, and the sweep goes on with the other dtypes.
With `--time-budget`, no cell starts after it (reported as skipped).
Defaults: 224x224, T = the config's (64), batches 1,2,4,8, float32 and bfloat16;
on CPU --size 96 --batches 2 --dtypes float32 unless given (said when chosen).

Figures: seconds per step (median, min, max), clips/s, GFLOP per step from XLA's
cost analysis of the lowered program (the same count on every backend), achieved
TFLOP/s, MFU against a peak (`--peak-tflops`, else a table of dense peaks by
device kind: bf16, and TF32 for float32 on GPUs; on CPU a float32 matmul's rate
measured here), and the compiled program's peak memory (arguments + outputs +
temporaries, donated buffers counted once).

With `--original PATH` each round runs ours in a process of its own
(`python -m rgbd_jax.tools.benchmark.model --worker SPEC`), then the original's
PyTorch network (`python -m rgbd_jax.tools.benchmark.original`), `--rounds`
times; each side's figure is the median of its rounds' medians with their
spread (min-max), and the ratio is original / ours. Compiled programs are kept in
a persistent compilation cache between rounds. The original is not run at B=1
(its forward squeezes the batch axis away there). The exit status is 1 when the
original fails (its traceback is printed after ours' figures). `--isolate` runs
ours in rounds of worker processes without the original (and lets `--time-budget`
stop a worker that overruns it). tools/gpu_sweep.sh runs the whole sweep on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rgbd_jax import hugepages
from rgbd_jax import parallel
from rgbd_jax.models import build
from rgbd_jax.models.ops.compile import compiler_options
from rgbd_jax.tools.benchmark import common
from rgbd_jax.tools.benchmark import report
from rgbd_jax.train import optim
from rgbd_jax.train import state as state_lib
from rgbd_jax.train import steps

DEFAULT_CONFIG = 'configs/ntu.py'
STEPS_PER_EPOCH = 1000  # only the learning-rate schedule's values depend on it, not the step's cost
DEFAULTS = {'batches': [1, 2, 4, 8], 'dtypes': ['float32', 'bfloat16']}
CPU_DEFAULTS = {'size': 96, 'batches': [2], 'dtypes': ['float32']}

# Dense peak TFLOP/s by device kind (a substring of jax's device_kind, first match):
# (bfloat16, float32). float32 on GPUs: the TF32 tensor-core rate (XLA's default
# precision for float32 convolutions and dots there); on TPUs float32 matmuls run
# as bfloat16 passes, so the bfloat16 peak.
PEAKS: tuple[tuple[str, float, float], ...] = (
    ('H100 PCIe', 756.0, 378.0),
    ('H100', 989.0, 494.0),
    ('H200', 989.0, 494.0),
    ('H800', 989.0, 494.0),
    ('A100', 312.0, 156.0),
    ('TPU v4', 275.0, 275.0),
    ('TPU v5 lite', 197.0, 197.0),
    ('TPU v5e', 197.0, 197.0),
    ('TPU v5p', 459.0, 459.0),
    ('TPU v5', 459.0, 459.0),
)


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--config', default=DEFAULT_CONFIG,
                      help='config file (configs/*.py[:arg] or an original YAML); default configs/ntu.py')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override, e.g. --set model.dtype=bfloat16 (same as --config.model.dtype=bfloat16)')
  parser.add_argument('--size', type=int, default=None, help='H = W (default 224; 96 on CPU)')
  parser.add_argument('--frames', type=int, default=None, help="T, frames per clip (default: the config's, 64)")
  parser.add_argument('--batches', default=None,
                      help='per-device batches to sweep, ascending (default 1,2,4,8; 2 on CPU)')
  parser.add_argument('--dtypes', default=None,
                      help='compute dtypes (default float32,bfloat16; float32 on CPU; model.dtype if overridden)')
  parser.add_argument('--phases', default='train,eval', help='train, eval or both (default both)')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs per cell after warm-up (default 3)')
  parser.add_argument('--warmup', type=int, default=1, help='untimed runs after compilation (default 1)')
  parser.add_argument('--rounds', type=int, default=3,
                      help='with --original (or --isolate): processes per side, alternating (default 3)')
  parser.add_argument('--peak-tflops', type=float, default=None,
                      help='peak TFLOP/s for MFU (default: by device kind; on CPU a measured float32 matmul)')
  parser.add_argument('--matmul', type=int, default=2048, help='N of the N x N float32 matmul (CPU peak)')
  parser.add_argument('--init', choices=['model', 'random'], default='model',
                      help="initial weights: the model's initialisation as train.py (default), or random "
                           "values of the same shapes (no initialisation program to compile: quicker to start)")
  parser.add_argument('--original', default='',
                      help="path to the original MotionRGBD repository: also time its PyTorch network")
  parser.add_argument('--isolate', action='store_true',
                      help='run ours in worker processes (rounds) even without --original')
  parser.add_argument('--time-budget', type=float, default=None,
                      help='seconds for the whole sweep: no new cell starts after it (workers are stopped '
                           '--grace seconds later); the figures so far are reported')
  parser.add_argument('--grace', type=float, default=30.0,
                      help='seconds a worker may overrun --time-budget before it is stopped (default 30)')
  parser.add_argument('--compilation-cache', default='',
                      help='persistent compilation cache for the worker processes (default: a temporary one)')
  parser.add_argument('--hugepages', choices=['inherit', 'on', 'off'], default='inherit',
                      help="workers' glibc malloc huge pages (GLIBC_TUNABLES; default: as this process)")
  parser.add_argument('--json', default='', help='write every figure to this JSON file')
  parser.add_argument('--markdown', default='', help='write the table to this markdown file')


def normalize_argv(argv: Sequence[str]) -> list[str]:
  """`--config.section.key=value` (or `--config.section.key value`) -> `--set section.key=value`."""
  out, i = [], 0
  argv = list(argv)
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      key, sep, value = arg[len('--config.'):].partition('=')
      if not sep:
        if i + 1 >= len(argv):
          raise SystemExit(f'{arg}: missing its value')
        value, i = argv[i + 1], i + 1
      out += ['--set', f'{key}={value}']
    else:
      out.append(arg)
    i += 1
  return out


def _list(text: str | None, kind=str) -> list | None:
  return None if text in (None, '') else [kind(x) for x in str(text).split(',') if x.strip()]


# ----------------------------------------------------------------------------- plan and peaks

def resolve_plan(spec: dict[str, Any], config, platform: str) -> dict[str, Any]:
  """Shapes, batches, dtypes and phases of a sweep: the given ones, else this platform's defaults."""
  given = {o.partition('=')[0] for o in spec.get('overrides', ())}
  cpu = platform == 'cpu'
  chosen = []
  size = spec.get('size')
  if size is None:
    size = CPU_DEFAULTS['size'] if cpu and 'model.sample_size' not in given else int(config.model.sample_size)
    if cpu and 'model.sample_size' not in given:
      chosen.append(f'--size {size}')
  batches = spec.get('batches')
  if not batches:
    batches = list(CPU_DEFAULTS['batches'] if cpu else DEFAULTS['batches'])
    if cpu:
      chosen.append('--batches ' + ','.join(map(str, batches)))
  dtypes = spec.get('dtypes')
  if not dtypes:
    if 'model.dtype' in given:
      dtypes = [str(config.model.dtype)]
    else:
      dtypes = list(CPU_DEFAULTS['dtypes'] if cpu else DEFAULTS['dtypes'])
      if cpu:
        chosen.append('--dtypes ' + ','.join(dtypes))
  for d in dtypes:
    if d not in common.DTYPES:
      raise ValueError(f'--dtypes: {d!r} is not one of {common.DTYPES}')
  phases = [p for p in spec.get('phases') or common.PHASES]
  for p in phases:
    if p not in common.PHASES:
      raise ValueError(f'--phases: {p!r} is not one of {common.PHASES}')
  return {'network': str(config.model.Network), 'size': int(size),
          'frames': int(spec.get('frames') or config.model.sample_duration),
          'batches': sorted(int(b) for b in batches), 'dtypes': dtypes, 'phases': phases,
          'repeats': int(spec.get('repeats', 3)), 'warmup': int(spec.get('warmup', 1)),
          'cpu_defaults_chosen': ' '.join(chosen)}


def table_peak(device_kind: str, dtype: str) -> float | None:
  """The dense peak TFLOP/s of a device kind for a dtype, from PEAKS (None: not listed)."""
  for name, bf16, f32 in PEAKS:
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else f32
  return None


def matmul_rate(n: int, repeats: int) -> float:
  """GFLOP/s of an n x n float32 matmul (the machine's practical peak for XLA).

  The better of XLA's default CPU path and the options the network is compiled with.
  """
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  best = 0.0
  for options in (None, compiler_options()):
    f = jax.jit(lambda x, y: x @ y, compiler_options=options or None)
    times = common.time_runs(lambda: f(a, a).block_until_ready(), 1, repeats)
    best = max(best, 2 * n ** 3 / min(times) / 1e9)
  return best


def resolve_peaks(spec: dict[str, Any], dtypes: Sequence[str], platform: str, device_kind: str
                  ) -> dict[str, dict[str, Any]]:
  """dtype -> {'tflops', 'source'}: --peak-tflops, the table, or (CPU) a measured float32 matmul."""
  if spec.get('peaks') and platform != 'cpu':  # a later round: the first round's
    return spec['peaks']
  out = {}  # on CPU measured in every round (the rate moves with the machine's load); the best is used
  for dtype in dtypes:
    if spec.get('peak_tflops'):
      out[dtype] = {'tflops': float(spec['peak_tflops']), 'source': '--peak-tflops'}
    elif platform == 'cpu':
      if 'cpu' not in out:
        n = int(spec.get('matmul', 2048))
        out['cpu'] = {'tflops': matmul_rate(n, 5) / 1e3,
                      'source': f'a {n}x{n} float32 matmul measured on this CPU (XLA)'}
      out[dtype] = dict(out['cpu'])
    else:
      peak = table_peak(device_kind, dtype)
      out[dtype] = ({'tflops': peak, 'source': f'dense {"bf16" if dtype == "bfloat16" else "TF32/f32"} peak '
                                               f'of {device_kind} (table)'} if peak else
                    {'tflops': None, 'source': f'{device_kind!r} not in the table: give --peak-tflops'})
  out.pop('cpu', None)
  return out


# ----------------------------------------------------------------------------- ours

def _import_pipeline(emit: Callable[[dict[str, Any]], None]):
  """rgbd_jax.data.pipeline; where grain (the loader's library) is missing, with a stand-in for it.

  `example_batch` does not use grain; the module imports it for the loader. A
  machine that has JAX but not grain (and no way to install it) can still time
  the steps; the stand-in is said in the output.
  """
  try:
    from rgbd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    if e.name != 'grain':
      raise
    stand_in = types.ModuleType('grain')
    stand_in.__getattr__ = lambda name: type(name, (), {})  # any class the module names at import
    sys.modules['grain'] = stand_in
    emit({'event': 'progress', 'message': 'ours: grain is not installed; a stand-in lets '
                                          'rgbd_jax.data.pipeline import (example_batch does not use it)'})
    from rgbd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline


def _compile(jitted, args: tuple[Any, ...], cell: dict[str, Any]):
  """(lowered, compiled) of a jitted step for one cell's arguments (a seam for tests)."""
  del cell
  lowered = jitted.lower(*args)
  return lowered, lowered.compile()


def _flops(lowered) -> float | None:
  """FLOPs of the program as written (XLA's cost analysis before backend passes).

  The same count on every backend: a compiled GPU program hands its
  convolutions to cuDNN calls, which its own cost analysis does not count.
  """
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = cost.get('flops') if cost else None
  return float(flops) if flops is not None and flops >= 0 else None


def _memory(compiled) -> dict[str, int] | None:
  """The compiled program's memory per device: arguments, outputs, temporaries, aliased (donated)."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 (not every backend has it)
    return None
  if stats is None:
    return None
  out = {name: int(getattr(stats, f'{name}_size_in_bytes', 0) or 0)
         for name in ('argument', 'output', 'alias', 'temp', 'generated_code')}
  out['peak'] = out['argument'] + out['output'] - out['alias'] + out['temp']
  return out


def _deleted(tree) -> bool:
  return any(getattr(x, 'is_deleted', lambda: False)() for x in jax.tree.leaves(tree))


def _variables(config, how: str, seed: int):
  """None (create_train_state initialises the model, as train.py), or random variables of its shapes."""
  if how == 'model':
    return None
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = jax.tree_util.keystr(path)
    if 'batch_stats' in name:  # running mean 0, variance 1
      return np.full(s.shape, 0.0 if name.endswith("'mean']") else 1.0, s.dtype)
    return (rng.standard_normal(s.shape) * 0.02).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, build.variable_shapes(config))


def _enable_cache(path: str) -> None:
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def measure_ours(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None] = common.emit,
                 on_train_state: Callable[[Any], None] | None = None) -> int:
  """Times our steps over the sweep of `spec`, emitting a 'plan' record and one record per cell.

  `on_train_state` (tests) is called with the train state after each timed training cell.
  """
  config = common.load_config(spec['config'], spec.get('overrides', ()))
  if spec.get('cache_dir'):
    _enable_cache(spec['cache_dir'])
  platform = jax.default_backend()
  device_kind = jax.devices()[0].device_kind
  plan = resolve_plan(spec, config, platform)
  mesh = parallel.make_mesh()
  plan.update(platform=platform, device_kind=device_kind, devices=int(mesh.devices.size),
              jax=jax.__version__, cores=common.cores(), pid=os.getpid(), started=time.time(),
              malloc_huge_pages=hugepages.active(),
              hugepages_hint=hugepages.hint(platform))
  plan['peaks'] = resolve_peaks(spec, plan['dtypes'], platform, device_kind)
  emit({'event': 'plan', 'side': 'ours', **plan})
  pipeline = _import_pipeline(emit)
  # later rounds: the cells the first one measured
  wanted = ({(c['phase'], c['dtype'], int(c['batch'])) for c in spec['cells']} if spec.get('cells') is not None
            else None)
  deadline = spec.get('deadline')
  network = plan['network']
  # One optimiser and one train state for every dtype: parameters, BatchNorm statistics and the
  # optimiser's state are float32 whatever the compute dtype (build.param_dtype). A state lost to
  # an out-of-memory step (its buffers were donated) is made anew.
  tx, schedule = optim.make_optimizer(config, STEPS_PER_EPOCH)
  state = None
  per_dtype: dict[str, dict[str, Any]] = {}
  stopped = {dtype: '' for dtype in plan['dtypes']}
  # batch-major (every dtype's small batches before any large one): a time budget cuts the large ones
  for batch_size in plan['batches']:
    for dtype in plan['dtypes']:
      if dtype not in per_dtype:
        cfg = common.cell_config(config, dtype, plan['size'], plan['frames'])
        epoch = int(cfg.common.scheduler.warm_up_epochs)  # distillation on, as most of a run
        per_dtype[dtype] = {'cfg': cfg, 'model': build.build_model(cfg), 'jitted': {},
                            'hp': steps.hparams(build.sharpness_temperature(cfg, epoch),
                                                optim.distill_weight(cfg, epoch))}
      cfg, model, hp, jitted = (per_dtype[dtype][k] for k in ('cfg', 'model', 'hp', 'jitted'))
      peak = plan['peaks'][dtype]
      for phase in [p for p in ('eval', 'train') if p in plan['phases']]:
        if wanted is not None and (phase, dtype, batch_size) not in wanted:
          continue
        key = {'side': 'ours', 'network': network, 'phase': phase, 'dtype': dtype, 'batch': batch_size}
        if stopped[dtype] or common.past(deadline):
          emit({'event': 'cell', **key, 'status': 'skipped', 'reason': stopped[dtype] or 'time budget'})
          continue
        try:
          if state is None or _deleted(state):
            emit({'event': 'progress', 'message': f'ours: creating the train state ({network})'})
            state = state_lib.create_train_state(model, cfg, tx, mesh, jax.random.PRNGKey(int(cfg.common.seed)),
                                                 variables=_variables(cfg, spec.get('init', 'model'),
                                                                      int(cfg.common.seed)))
          global_batch = parallel.global_batch_size(batch_size, mesh)
          batch = parallel.shard_batch(
              pipeline.example_batch(cfg, parallel.local_batch_size(batch_size, mesh), train=phase == 'train'),
              mesh)
          emit({'event': 'progress', 'message': f'ours: compiling {phase} {dtype} B={batch_size}', 'cell': key})
          start = time.perf_counter()
          if phase not in jitted:  # the jitted steps train.py and evaluation run
            jitted[phase] = (steps.jit_train_step(model, cfg, tx, schedule) if phase == 'train'
                             else steps.jit_eval_step(model, cfg))
          lowered, compiled = _compile(jitted[phase], (state if phase == 'train' else state.variables, batch, hp),
                                       key)
          compile_s = time.perf_counter() - start
          extra: dict[str, Any] = {}
          if phase == 'train':
            holder = [state]
            step_before = int(state.step)

            def run_train():
              holder[0], metrics = compiled(holder[0], batch, hp)
              jax.block_until_ready((holder[0], metrics))  # the whole new state, not only the loss

            try:
              times = common.time_runs(run_train, plan['warmup'], plan['repeats'])
            finally:
              state = holder[0]
            extra['steps_taken'] = int(state.step) - step_before
            if on_train_state is not None:
              on_train_state(state)
          else:
            variables = state.variables
            times = common.time_runs(lambda: jax.block_until_ready(compiled(variables, batch, hp)),
                                     plan['warmup'], plan['repeats'])
        except Exception as e:  # noqa: BLE001 (out of memory: reported, the sweep goes on)
          if not common.is_oom(e):
            raise
          compiled = lowered = batch = None  # the failed cell's buffers go before the next cell
          gc.collect()
          stopped[dtype] = f'after OOM at {phase} B={batch_size}'
          emit({'event': 'cell', **key, 'status': 'OOM', 'error': f'{type(e).__name__}: {str(e)[:300]}'})
          continue
        stats = common.spread(times)
        flops = _flops(lowered)
        memory = _memory(compiled)
        record = {'event': 'cell', **key, 'status': 'ok', 'global_batch': global_batch, 'devices': plan['devices'],
                  'times': times, **stats, 'clips_per_s': global_batch / stats['median'],
                  'gflop': flops / 1e9 if flops is not None else None, 'compile_s': compile_s,
                  'memory': memory, 'peak_bytes': memory['peak'] if memory else None,
                  'peak_tflops': peak['tflops'], 'peak_source': peak['source'], **extra}
        if flops is not None:
          record['tflops'] = flops / stats['median'] / 1e12
          if peak['tflops']:
            record['mfu'] = record['tflops'] / (peak['tflops'] * plan['devices'])
        emit(record)
        del compiled, lowered, batch
  emit({'event': 'done', 'side': 'ours'})
  return 0


def worker_main(argv: Sequence[str]) -> int:
  """`python -m rgbd_jax.tools.benchmark.model --worker SPEC`: one round of ours."""
  parser = argparse.ArgumentParser(description='one process of ours for scripts/benchmark.py model')
  parser.add_argument('--worker', required=True, help='JSON spec written by the benchmark')
  args = parser.parse_args(argv)
  try:
    return measure_ours(common.read_spec(args.worker))
  except Exception as e:  # noqa: BLE001 (reported to the parent)
    traceback.print_exc()
    common.emit({'event': 'failed', 'side': 'ours', 'error': f'{type(e).__name__}: {e}',
                 'traceback': traceback.format_exc()})
    return 1


# ----------------------------------------------------------------------------- the parent

def _env(mode: str) -> dict[str, str]:
  """Workers' environment, with glibc's malloc huge pages switched as asked."""
  env = common.worker_env()
  if mode == 'inherit':
    return env
  tunables = [t for t in env.get('GLIBC_TUNABLES', '').split(':') if t and not t.startswith(hugepages.TUNABLE + '=')]
  if mode == 'on':
    tunables.append(f'{hugepages.TUNABLE}=1')
  env['GLIBC_TUNABLES'] = ':'.join(tunables)
  if not env['GLIBC_TUNABLES']:
    del env['GLIBC_TUNABLES']
  return env


def _print(line: str | None) -> None:
  if line:
    print(line, flush=True)


def _spec(args) -> dict[str, Any]:
  return {'config': args.config, 'overrides': list(args.set or []), 'size': args.size, 'frames': args.frames,
          'batches': _list(args.batches, int), 'dtypes': _list(args.dtypes), 'phases': _list(args.phases),
          'repeats': args.repeats, 'warmup': args.warmup, 'matmul': args.matmul, 'peak_tflops': args.peak_tflops,
          'init': args.init}


def _write_spec(directory: str, name: str, spec: dict[str, Any]) -> str:
  path = os.path.join(directory, name)
  with open(path, 'w') as f:
    json.dump(spec, f)
  return path


def _note_stopped(res: common.WorkerResult) -> None:
  """A worker stopped at the time budget: its cell in progress is recorded as stopped."""
  if not res.timed_out:
    return
  started = [r['cell'] for r in res.of('progress') if 'cell' in r]
  if started and not any(r.get('event') == 'cell' and all(r.get(k) == v for k, v in started[-1].items())
                         for r in res.records):
    record = {'event': 'cell', **started[-1], 'status': 'stopped',
              'reason': 'time budget: the worker was stopped in this cell'}
    res.records.append(record)
    _print(report.progress_line(record))


def _cells(records: Sequence[dict[str, Any]], statuses=('ok', 'OOM')) -> list[dict[str, Any]]:
  return [{'phase': r['phase'], 'dtype': r['dtype'], 'batch': r['batch']} for r in records
          if r.get('event') == 'cell' and r['status'] in statuses]


def _alternate(args, spec: dict[str, Any], result: dict[str, Any], start: float) -> str | None:
  """Rounds of worker processes: ours, then the original; returns the original's failure (or None)."""
  budget_end = start + args.time_budget if args.time_budget else None
  share = lambda f: start + f * args.time_budget if args.time_budget else None
  own_cache = not args.compilation_cache
  cache = args.compilation_cache or tempfile.mkdtemp(prefix='rgbd_jax_bench_cache_')
  tmp = tempfile.mkdtemp(prefix='rgbd_jax_bench_spec_')
  env = _env(args.hugepages)
  failure, plan, cells = None, None, None
  try:
    for rnd in range(1, args.rounds + 1):
      if rnd > 1 and common.past(budget_end):
        print(f'time budget spent: {rnd - 1} round(s) of {args.rounds}', flush=True)
        break
      first = rnd == 1
      ours_spec = dict(spec, cache_dir=cache, deadline=share(0.5 if args.original else 0.7) if first else budget_end)
      if plan is not None:
        ours_spec.update(size=plan['size'], frames=plan['frames'], batches=plan['batches'], dtypes=plan['dtypes'],
                         phases=plan['phases'], peaks=plan['peaks'], cells=cells)
      label = f'round {rnd}/{args.rounds} ours'
      print(f'{label}: a new process', flush=True)
      timeout = ours_spec['deadline'] - time.time() + args.grace if ours_spec['deadline'] else None
      res = common.run_worker(
          [sys.executable, '-m', 'rgbd_jax.tools.benchmark.model', '--worker', _write_spec(tmp, f'ours{rnd}.json', ours_spec)],
          env=env, timeout=timeout, on_record=functools.partial(_on_record, label, first))
      if res.timed_out:
        print(f'{label}: stopped at the time budget', flush=True)
      _note_stopped(res)
      result['rounds']['ours'].append(res.records)
      if not res.of('plan') or (not res.ok and not res.timed_out):
        errors = res.of('failed')
        raise RuntimeError(f'ours failed in round {rnd}: ' + (errors[0]['traceback'] if errors else res.stderr))
      if plan is None:
        plan = res.of('plan')[0]
        result['plan'] = plan
        cells = _cells(res.records, ('ok',))
      if not args.original or failure:
        continue
      ok_cells = [c for c in _cells(res.records, ('ok',)) if c in cells]  # measured by ours this round
      orig_spec = {'original': args.original, 'config': args.config, 'overrides': list(args.set or []),
                   'size': plan['size'], 'frames': plan['frames'], 'cells': ok_cells, 'repeats': args.repeats,
                   'warmup': args.warmup, 'deadline': share(0.8) if first else budget_end}
      label = f'round {rnd}/{args.rounds} original'
      print(f'{label}: a new process', flush=True)
      timeout = orig_spec['deadline'] - time.time() + args.grace if orig_spec['deadline'] else None
      res = common.run_worker(
          [sys.executable, '-m', 'rgbd_jax.tools.benchmark.original', '--spec',
           _write_spec(tmp, f'original{rnd}.json', orig_spec)],
          env=env, timeout=timeout, on_record=functools.partial(_on_record, label, first))
      if res.timed_out:
        print(f'{label}: stopped at the time budget', flush=True)
      _note_stopped(res)
      result['rounds']['original'].append(res.records)
      info = res.of('info')
      if info and 'original' not in result:
        result['original'] = info[0]
      errors = res.of('failed')
      if errors or (res.returncode != 0 and not res.timed_out):
        tb = errors[0].get('traceback', '') if errors else res.stderr
        failure = (f'the original failed in round {rnd} ({errors[0]["where"]}): {errors[0]["error"]}\n{tb}'
                   if errors else f'the original exited with status {res.returncode}\n{tb}')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    if own_cache:
      shutil.rmtree(cache, ignore_errors=True)
  return failure


def _on_record(label: str, first: bool, record: dict[str, Any]) -> None:
  """Prints a worker's record as it comes (the plan and the original's setup in the first round)."""
  if first and record.get('event') == 'plan':
    _print_plan(record)
  elif first and record.get('event') == 'info':
    print(f'the original runs on torch {record["torch"]} {record["device"]} ({record["device_name"]}, '
          f'{record["threads"]} threads)' + (f'; dropped non-string sys.path entries {record["sys_path_dropped"]}'
                                            if record['sys_path_dropped'] else ''), flush=True)
  _print(report.progress_line(record, label))


def _print_plan(plan: dict[str, Any]) -> None:
  print(f'ours: {plan["network"]} on {plan["platform"]} ({plan["device_kind"]}, {plan["devices"]} device(s), '
        f'{plan["cores"]} cores), jax {plan["jax"]}; {plan["size"]}x{plan["size"]}, T={plan["frames"]}, '
        f'batches {",".join(map(str, plan["batches"]))} per device, {",".join(plan["dtypes"])}, '
        f'{"+".join(plan["phases"])}; median of {plan["repeats"]} after {plan["warmup"]} warm-up; '
        f'malloc huge pages {"on" if plan["malloc_huge_pages"] else "off"}', flush=True)
  if plan.get('cpu_defaults_chosen'):
    print(f'CPU: chose {plan["cpu_defaults_chosen"]} (the defaults shrink on CPU; give the flags to change them)',
          flush=True)
  if plan.get('hugepages_hint'):
    print(plan['hugepages_hint'], flush=True)
  for dtype, peak in plan['peaks'].items():
    figure = f'{peak["tflops"]:.4g} TFLOP/s' if peak['tflops'] else 'none'
    print(f'MFU peak, {dtype}: {figure} ({peak["source"]})', flush=True)


def run(args) -> int:
  start = time.time()
  spec = _spec(args)
  try:
    config = common.load_config(args.config, spec['overrides'])
  except (OSError, KeyError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  network = str(config.model.Network)
  if network not in common.NETWORKS:
    print(f'error: model.Network={network!r}: not one of {common.NETWORKS}', file=sys.stderr)
    return 2
  print(f'model benchmark: {network}, config {args.config}' +
        (f' with {" ".join(spec["overrides"])}' if spec['overrides'] else '') +
        (f'; the original from {args.original}, {args.rounds} alternating round(s) of one process per side'
         if args.original else ''), flush=True)
  result: dict[str, Any] = {'argv': sys.argv, 'config': args.config, 'overrides': spec['overrides'],
                            'network': network, 'rounds': {'ours': [], 'original': []}}
  failure = None
  status = 0
  if args.original or args.isolate:
    try:
      failure = _alternate(args, spec, result, start)
    except RuntimeError as e:
      print(f'error: {e}', file=sys.stderr)
      status = 1
  else:
    if args.hugepages != 'inherit':
      print('--hugepages applies to worker processes (--original or --isolate); this process runs as it was '
            'started', flush=True)
    records: list[dict[str, Any]] = []

    def collect(record):
      records.append(record)
      if record['event'] == 'plan':
        _print_plan(record)
      _print(report.progress_line(record))

    spec['deadline'] = start + args.time_budget if args.time_budget else None
    measure_ours(spec, emit=collect)
    result['rounds']['ours'].append(records)
    result['plan'] = next(r for r in records if r['event'] == 'plan')
  plans = [r for records in result['rounds']['ours'] for r in records if r.get('event') == 'plan']
  if plans:  # the best rate of all rounds (on CPU each round measures its own)
    result['plan']['peaks'] = {d: max((p['peaks'][d] for p in plans), key=lambda x: x['tflops'] or 0)
                               for d in plans[0]['peaks']}
  rows = report.aggregate(network, result['rounds']['ours'], result['rounds']['original'],
                          peaks=result['plan']['peaks'] if plans else None)
  result['rows'] = rows
  result['largest_batch'] = {'ours': report.largest_batches(rows, 'ours')}
  if args.original:
    result['largest_batch']['original'] = report.largest_batches(rows, 'original')
  table = report.markdown(rows)
  result['markdown'] = table
  print()
  print(table)
  rounds = len(result['rounds']['ours'])
  over = "the rounds' medians" if rounds > 1 else 'the timed repeats'
  print(f'(seconds per step: median (min-max) of {over}; '
        f'{rounds} round(s) of ours' + (f', {len(result["rounds"]["original"])} of the original; ratio = original / '
                                        f'ours' if args.original else '') + '; B per device; GFLOP from XLA cost '
        'analysis; peak GiB: compiled arguments + outputs + temporaries, donated buffers once)')
  for name, b in result['largest_batch']['ours'].items():
    print(f'largest batch that ran, ours, {name}: {b if b is not None else "none"}')
  if 'plan' in result:
    for dtype, peak in result['plan']['peaks'].items():
      print(f'MFU against {peak["tflops"]:.4g} TFLOP/s for {dtype} ({peak["source"]})' if peak['tflops'] else
            f'no MFU for {dtype}: {peak["source"]}')
  result['failure'] = failure
  result['seconds'] = time.time() - start
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {args.json}')
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(table + '\n')
    print(f'wrote {args.markdown}')
  if failure:
    print(f'error: {failure}', file=sys.stderr)
    return 1
  return status


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0].startswith('--worker'):
    return worker_main(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  return run(parser.parse_args(normalize_argv(argv)))


if __name__ == '__main__':
  sys.exit(main())
