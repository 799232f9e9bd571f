"""Network speed: evaluation forward per clip and one training step, beside the original.

    python scripts/benchmark.py model                       # ours (float32, the papers' architecture)
    python scripts/benchmark.py model --original /path/to/MotionRGBD --json out.json

Times, after warm-up: the evaluation forward (B=1, T=64, 224x224 by default)
and a training step (forward + backward + SGD update with BatchNorm batch
statistics and dropout on; B=2, T=64, 96x96 by default). FLOPs come from XLA's
cost analysis of the lowered program, the same on every backend (~146 GFLOP per clip
forward at 224x224); the achieved rate is also given as a fraction of a large
float32 matmul's rate measured here. With --original, the PyTorch DSNNet of the
original repository runs the same shapes in the same process (torch threads =
the cores JAX uses), timed right after ours, phase by phase, each in its own
steady state (in alternation each run starts right after the other framework's
memory traffic and thread pools, which moved both sides' figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgbd_jax import configs
from rgbd_jax import hugepages
from rgbd_jax.models.build import build_model
from rgbd_jax.models.ops.compile import compiler_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--eval-batch', type=int, default=1, help='clips per evaluation forward (default 1)')
  parser.add_argument('--eval-size', type=int, default=224, help='evaluation H = W (default 224)')
  parser.add_argument('--train-batch', type=int, default=2, help='clips per training step (default 2)')
  parser.add_argument('--train-size', type=int, default=96, help='training H = W (default 96)')
  parser.add_argument('--frames', type=int, default=64, help='T, frames per clip (default 64)')
  parser.add_argument('--classes', type=int, default=60, help='classes of the heads (default 60, NTU)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'], help='compute dtype')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs after warm-up; the median is reported')
  parser.add_argument('--warmup', type=int, default=1, help='untimed runs after compilation (default 1)')
  parser.add_argument('--matmul', type=int, default=4096, help='size N of the N x N float32 matmul reference')
  parser.add_argument('--skip-eval', action='store_true', help='do not time the evaluation forward')
  parser.add_argument('--skip-train', action='store_true', help='do not time the training step')
  parser.add_argument('--original', default='',
                      help='path to the original MotionRGBD repository: also time its PyTorch DSNNet')
  parser.add_argument('--json', default='', help='write the figures to this JSON file')


def _time(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _flops(lowered) -> float:
  """FLOPs of the program as written (XLA's cost analysis before backend passes).

  The same count on every backend: a compiled GPU program hands its
  convolutions to cuDNN calls, which its own cost analysis does not count.
  """
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def matmul_rate(n: int, repeats: int) -> float:
  """GFLOP/s of an n x n float32 matmul (the machine's practical peak for XLA).

  The better of XLA's default CPU path and the options the network is compiled with.
  """
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  best = 0.0
  for options in (None, compiler_options()):
    f = jax.jit(lambda x, y: x @ y, compiler_options=options or None)
    seconds = _time(lambda: f(a, a).block_until_ready(), 1, repeats)
    best = max(best, 2 * n ** 3 / seconds / 1e9)
  return best


def _config(args):
  c = configs.base_config()
  c.model.num_classes = args.classes
  c.model.sample_duration = args.frames
  c.model.dtype = args.dtype
  return c


def _inputs(b, t, s, seed=0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  video = jax.random.uniform(k1, (b, t, s, s, 3), jnp.float32, -1.0, 1.0)
  heat = jax.random.uniform(k2, (b, t, s, s, 1), jnp.float32)
  return video, heat


def ours_eval(args) -> dict:
  """Compiles our evaluation forward; returns its runner, clips per run and XLA's GFLOP."""
  model = build_model(_config(args))
  video, heat = _inputs(args.eval_batch, args.frames, args.eval_size)
  variables = jax.jit(lambda v, h: model.init(jax.random.PRNGKey(0), v, h, train=False))(
      video[:, :, :32, :32], heat[:, :, :32, :32])
  fwd = jax.jit(lambda v, x, h: model.apply(v, x, h, train=False, temp=0.07),
                compiler_options=compiler_options())
  lowered = fwd.lower(variables, video, heat)
  compiled = lowered.compile()
  return {'run': lambda: jax.block_until_ready(compiled(variables, video, heat)), 'clips': args.eval_batch,
          'gflop': _flops(lowered) / 1e9}


def _ls_ce(logits, labels, eps=0.1):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
  return jnp.mean((1 - eps) * nll + eps * jnp.mean(-logp, axis=-1))


def ours_train(args) -> dict:
  """Compiles our training step; returns its runner, clips per run and XLA's GFLOP."""
  config = _config(args)
  model = build_model(config)
  video, heat = _inputs(args.train_batch, args.frames, args.train_size)
  labels = jnp.arange(args.train_batch) % args.classes
  variables = jax.jit(lambda v, h: model.init(jax.random.PRNGKey(0), v, h, train=False))(
      video[:, :, :32, :32], heat[:, :, :32, :32])
  tx = optax.chain(optax.clip_by_global_norm(config.model.grad_clip),
                   optax.add_decayed_weights(config.common.weight_decay),
                   optax.sgd(config.common.learning_rate, momentum=config.common.momentum))
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  def step(state, video, heat, labels, rng):
    params, batch_stats, opt_state = state
    k_drop, k_frames = jax.random.split(rng)

    def loss_fn(p):
      out, mutated = model.apply({'params': p, 'batch_stats': batch_stats}, video, heat, train=True,
                                 temp=0.07, rngs={'dropout': k_drop, 'frames': k_frames},
                                 mutable=['batch_stats'])
      ce = _ls_ce(out['logits'], labels) + 0.5 * sum(_ls_ce(out[k], labels) for k in ('xs', 'xm', 'xl'))
      return ce + out['distillation_loss'], mutated['batch_stats']

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state), loss

  jstep = jax.jit(step, donate_argnums=0, compiler_options=compiler_options())
  rng = jax.random.PRNGKey(1)
  lowered = jstep.lower(state, video, heat, labels, rng)
  compiled = lowered.compile()
  holder = [state]

  def run_once():
    holder[0], loss = compiled(holder[0], video, heat, labels, rng)
    jax.block_until_ready((holder[0], loss))  # the whole update, not only the loss

  return {'run': run_once, 'clips': args.train_batch, 'gflop': _flops(lowered) / 1e9}


# ----------------------------------------------------------------------------- the original

def _import_original(path: str):
  """Imports the original's lib/model package with stand-ins for what it imports but does not run.

  torchvision cannot sit beside torch 2.13 here: FRP imports `transforms` and
  `save_image` (used only by its unused rank-pooling path); DSN imports the
  repository's `utils` package (matplotlib/sklearn/seaborn) for checkpoint
  loading only. `.cuda()` becomes a no-op so the CPU runs it.
  """
  import importlib.util
  import torch

  if not os.path.isdir(os.path.join(path, 'lib', 'model')):
    raise FileNotFoundError(f'--original: {path}/lib/model not found (expected the MotionRGBD repository)')
  stub = lambda name, **attrs: sys.modules.setdefault(name, types.ModuleType(name)).__dict__.update(attrs)
  unused = lambda *a, **k: None
  stub('torchvision')
  stub('torchvision.transforms', Grayscale=unused)
  stub('torchvision.utils', save_image=unused, make_grid=unused)
  sys.modules['torchvision'].transforms = sys.modules['torchvision.transforms']
  sys.modules['torchvision'].utils = sys.modules['torchvision.utils']
  stub('utils', load_pretrained_checkpoint=unused, load_checkpoint=unused)
  if _torch_device(torch) == 'cpu':  # its code calls .cuda() in places; on CPU those become no-ops
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
  spec = importlib.util.spec_from_file_location(
      'motionrgbd_model', os.path.join(path, 'lib', 'model', '__init__.py'),
      submodule_search_locations=[os.path.join(path, 'lib', 'model')])
  module = importlib.util.module_from_spec(spec)
  sys.modules['motionrgbd_model'] = module
  spec.loader.exec_module(module)
  return module, torch


def _torch_device(torch) -> str:
  """The original runs where JAX runs: on the GPU when JAX has one and torch sees it."""
  return 'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'


def _original_args(args, config):
  m, d = config.model, config.dataset
  return argparse.Namespace(
      frp=m.frp, w=m.w, low_frames=d.low_frames, media_frames=d.media_frames, high_frames=d.high_frames,
      temp=list(m.temp), N=m.N, knn_attention=m.knn_attention, SEHeads=m.SEHeads, dataset=config.common.dataset,
      recoupling=m.recoupling, Network='I3DWTrans', sharpness=m.sharpness, epoch=99, epochs=config.common.epochs,
      temper=m.temper, num_classes=args.classes)


def original(args) -> dict:
  """Builds the original DSNNet; returns its device and a runner per timed phase."""
  module, torch = _import_original(args.original)
  torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
  config = _config(args)
  device = _torch_device(torch)
  net = module.DSNNet(_original_args(args, config), num_classes=args.classes, pretrained=False).to(device)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  out = {'device': device}
  tensor = lambda a: torch.from_numpy(np.array(a)).permute(0, 4, 1, 2, 3).contiguous().to(device)
  if not args.skip_eval:
    eval_inputs = [tensor(a) for a in _inputs(args.eval_batch, args.frames, args.eval_size)]

    def fwd():  # its own inputs: the runners run after both are built
      net.eval()
      with torch.no_grad():
        net(*eval_inputs)
      sync()

    out['eval'] = fwd
  if not args.skip_train:
    opt = torch.optim.SGD(net.parameters(), lr=config.common.learning_rate, momentum=config.common.momentum,
                          weight_decay=config.common.weight_decay)
    train_inputs = [tensor(a) for a in _inputs(args.train_batch, args.frames, args.train_size)]
    labels = (torch.arange(args.train_batch) % args.classes).to(device)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
      net.train()
      opt.zero_grad()
      (logits, xs, xm, xl), distill, _ = net(*train_inputs)
      loss = ce(logits, labels) + 0.5 * (ce(xs, labels) + ce(xm, labels) + ce(xl, labels)) + distill
      loss.backward()
      torch.nn.utils.clip_grad_norm_(net.parameters(), config.model.grad_clip)
      opt.step()
      sync()

    out['train'] = step
  return out


# ----------------------------------------------------------------------------- report

def run(args) -> int:
  cores = len(os.sched_getaffinity(0))
  huge = hugepages.active()
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({cores} cores), dtype {args.dtype}, '
        f'median of {args.repeats} after {args.warmup} warm-up, malloc huge pages {"on" if huge else "off"}',
        flush=True)
  result = {'cores': cores, 'dtype': args.dtype, 'repeats': args.repeats, 'malloc_huge_pages': huge}
  result['matmul_gflops'] = matmul_rate(args.matmul, args.repeats)
  print(f'reference: {args.matmul}x{args.matmul} float32 matmul {result["matmul_gflops"]:.1f} GFLOP/s', flush=True)
  phases = []  # (key, row name, shape, ours)
  if not args.skip_eval:
    phases.append(('eval', 'eval forward', f'B={args.eval_batch} T={args.frames} {args.eval_size}x{args.eval_size}',
                   ours_eval(args)))
  if not args.skip_train:
    phases.append(('train', 'train step', f'B={args.train_batch} T={args.frames} {args.train_size}x{args.train_size}',
                   ours_train(args)))
  runners, failure = {}, None
  if args.original:
    try:
      runners = original(args)
      result['original'] = {'device': runners.pop('device')}
      print(f'the original runs on torch\'s {result["original"]["device"]}', flush=True)
    except Exception as e:  # noqa: BLE001 (ours is still timed; the exit status says it failed)
      failure = f'the original could not be built: {type(e).__name__}: {e}'
      traceback.print_exc()  # where in the original's code (or in our stand-ins for its imports)
      print(failure, flush=True)
  rows = []
  for key, name, shape, ours in phases:
    seconds = {'ours': _time(ours.pop('run'), args.warmup, args.repeats)}
    if key in runners:
      try:
        seconds['original'] = _time(runners[key], args.warmup, args.repeats)
      except Exception as e:  # noqa: BLE001 (ours is timed; the exit status says the original failed)
        failure = f'the original failed in its {name}: {type(e).__name__}: {e}'
        traceback.print_exc()
        print(failure, flush=True)
        runners = {}
    r = dict(ours, seconds=seconds['ours'], clips_per_s=ours['clips'] / seconds['ours'])
    r['gflops'] = r['gflop'] / r['seconds']
    result[key] = r
    if 'original' in seconds:
      result['original'][key] = {'seconds': seconds['original'], 'clips_per_s': ours['clips'] / seconds['original']}
    rows.append((key, name, shape, r))
    print(f'ours, {name}: {r["seconds"]:.3f} s' + (f'; original: {seconds["original"]:.3f} s' if 'original' in seconds
                                                  else ''), flush=True)
  print()
  print(f'{"":13s} {"shape":22s} {"ours s":>8s} {"clips/s":>8s} {"GFLOP":>7s} {"GFLOP/s":>8s} '
        f'{"of mm":>6s} {"orig s":>8s} {"speed-up":>8s}')
  for key, name, shape, r in rows:
    frac = r['gflops'] / result['matmul_gflops']
    r['fraction_of_matmul'] = frac
    orig = result.get('original', {}).get(key)
    orig_s = f'{orig["seconds"]:8.3f}' if orig else f'{"-":>8s}'
    ratio = f'{orig["seconds"] / r["seconds"]:7.2f}x' if orig else f'{"-":>8s}'
    if orig:
      r['speedup_vs_original'] = orig['seconds'] / r['seconds']
    print(f'{name:13s} {shape:22s} {r["seconds"]:8.3f} {r["clips_per_s"]:8.3f} {r["gflop"]:7.1f} '
          f'{r["gflops"]:8.1f} {frac:6.1%} {orig_s} {ratio}')
  print('(the forward is ~146 GFLOP per clip at 224x224; GFLOP counted by XLA cost analysis of the lowered program)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {args.json}')
  if failure:
    print(f'error: {failure}', file=sys.stderr)
    return 1
  return 0
