"""The original's network (PyTorch), timed in a process of its own: the other side of the model benchmark.

    python -m rgbd_jax.tools.benchmark.original --spec SPEC.json

Run by `scripts/benchmark.py model --original PATH`, round by round, alternating with
a process for ours. SPEC names the checkout, the config (file + overrides) and the
cells (phase, dtype, per-device batch) to time; each result is printed as a protocol
line (`common.emit`). This process imports no JAX: torch has every core
(torch threads = cores) and runs on cuda where torch sees a GPU.

The network is the original's DSNNet (I3DWTrans) or CrossFusionNet (FusionNet),
with random weights. Its training step is the original's: SGD (lr, momentum,
weight decay of the config), the unimodal objective label-smoothing CE (0.1) on
the logits + 0.5 x (xs, xm, xl) + distillation (tools/train.py), the fusion
network's own CE + BCE + MSE + distillation (tools/fusion.py), then
clip_grad_norm_(grad_clip) and the optimiser step. bfloat16 runs under
torch.autocast(bfloat16) (the original's own mixed precision is float16 autocast
with a GradScaler). Evaluation: model.eval() under no_grad.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
import types
from typing import Any

import ml_collections

from rgbd_jax import configs
from rgbd_jax.tools.benchmark import common

PACKAGE = 'motionrgbd_model'
# Passed where the fusion network requires checkpoint paths; `utils.load_pretrained_checkpoint`
# is a stand-in that loads nothing, so the weights stay random.
NO_CHECKPOINT = 'benchmark:random-weights'
# Its forward squeezes the batch axis away at B=1 (`.squeeze()` in lib/model/DTN.py and
# fusion_Net.py), after which its losses fail: B=1 is not run.
MIN_BATCH = 2
B1_REASON = "the original's forward squeezes B=1 away (.squeeze() in DTN.py/fusion_Net.py)"


def sanitize_sys_path() -> list[Any]:
  """Drops the entries of sys.path that are not strings; returns them.

  The original's lib/model/fusion_Net.py runs `sys.path.append(['../../', '../'])`
  (a list). With a torch that ships triton, the next `importlib.metadata` lookup
  (torch's first compile or autocast use) then fails with
  `TypeError: unhashable type: 'list'`. The relative paths it meant are not needed:
  the original's `utils` is a stand-in here.
  """
  dropped = [p for p in sys.path if not isinstance(p, (str, bytes, os.PathLike))]
  sys.path[:] = [p for p in sys.path if isinstance(p, (str, bytes, os.PathLike))]
  return dropped


def import_original(path: str, device: str):
  """Imports the original's lib/model package with stand-ins for what it imports but does not run.

  torchvision need not be installed beside torch: FRP imports `transforms` and
  `save_image` (used only by its unused rank-pooling path); DSN and the fusion
  network import the repository's `utils` package (matplotlib/sklearn/seaborn)
  for checkpoint loading only. On CPU `.cuda()` becomes a no-op. Returns
  (module, torch, the non-string sys.path entries dropped after the import).
  """
  import torch  # pylint: disable=g-import-not-at-top

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
  if device == 'cpu':  # its code calls .cuda() in places; on CPU those become no-ops
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
  spec = importlib.util.spec_from_file_location(
      PACKAGE, os.path.join(path, 'lib', 'model', '__init__.py'),
      submodule_search_locations=[os.path.join(path, 'lib', 'model')])
  module = importlib.util.module_from_spec(spec)
  sys.modules[PACKAGE] = module
  try:
    spec.loader.exec_module(module)
  finally:
    dropped = sanitize_sys_path()
  return module, torch, dropped


def original_args(config: ml_collections.ConfigDict) -> argparse.Namespace:
  """The original's `args` for its network, from our config."""
  m, d, c = config.model, config.dataset, config.common
  epoch = int(c.scheduler.warm_up_epochs)  # as ours: the distillation on, a mid-warm-up temperature
  return argparse.Namespace(
      frp=m.frp, w=m.w, low_frames=d.low_frames, media_frames=d.media_frames, high_frames=d.high_frames,
      temp=list(m.temp), N=m.N, knn_attention=m.knn_attention, SEHeads=m.SEHeads, dataset=c.dataset,
      recoupling=m.recoupling, Network=m.Network, sharpness=m.sharpness, epoch=min(epoch, int(c.epochs) - 1),
      epochs=c.epochs, temper=m.temper, num_classes=configs.num_classes(config), pretrained=False,
      rgb_checkpoint=NO_CHECKPOINT, depth_checkpoint=NO_CHECKPOINT)


class Network:
  """The original's network for a config, with its training step and evaluation forward."""

  def __init__(self, module, torch, config: ml_collections.ConfigDict, device: str):
    self.torch, self.config, self.device = torch, config, device
    self.fusion = config.model.Network == 'FusionNet'
    args = original_args(config)
    n = configs.num_classes(config)
    cls = module.CrossFusionNet if self.fusion else module.DSNNet
    self.net = cls(args, num_classes=n, pretrained=False).to(device)
    c = config.common
    self.opt = torch.optim.SGD(self.net.parameters(), lr=float(c.learning_rate), momentum=float(c.momentum),
                               weight_decay=float(c.weight_decay))
    self.ce = torch.nn.CrossEntropyLoss(label_smoothing=configs.label_smoothing(config))
    self.classes = n

  def sync(self):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def inputs(self, batch: int, frames: int, size: int, seed: int = 0):
    """Random inputs in the original's layout (B, C, T, H, W): clips in [-1, 1], heatmaps in [0, 1]."""
    torch = self.torch
    g = torch.Generator(device='cpu').manual_seed(seed)
    make = lambda c, lo: (torch.rand((batch, c, frames, size, size), generator=g) * (1 - lo) + lo).to(self.device)
    streams = 2 if self.fusion else 1
    clips = [(make(3, -1.0), make(1, 0.0)) for _ in range(streams)]
    labels = (torch.arange(batch) % self.classes).to(self.device)
    return clips, labels

  def _forward(self, clips, labels):
    if self.fusion:
      (rgb, rgb_h), (depth, depth_h) = clips
      (logits, _, _), (ce, bce, mse, distill) = self.net((rgb, depth), (rgb_h, depth_h), labels)
      return logits, ce + mse + bce + distill  # tools/fusion.py
    (logits, xs, xm, xl), distill, _ = self.net(*clips[0])
    ce = self.ce
    lamdb = [float(x) for x in self.config.common.loss_lamdb] if self.config.common.MultiLoss else [1, 0, 0, 0]
    loss = (lamdb[0] * ce(logits, labels) + lamdb[1] * ce(xs, labels) + lamdb[2] * ce(xm, labels)
            + lamdb[3] * ce(xl, labels) + float(self.config.common.distill) * distill)  # tools/train.py
    return logits, loss

  def autocast(self, dtype: str):
    torch = self.torch
    if dtype == 'bfloat16':
      return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
    return torch.autocast(device_type=self.device, enabled=False)

  def train_runner(self, dtype: str, clips, labels):
    def step():
      self.net.train()
      self.opt.zero_grad()
      with self.autocast(dtype):
        _, loss = self._forward(clips, labels)
      loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.config.model.grad_clip))
      self.opt.step()
      self.sync()
    return step

  def eval_runner(self, dtype: str, clips, labels):
    def forward():
      self.net.eval()
      with self.torch.no_grad(), self.autocast(dtype):
        self._forward(clips, labels)
      self.sync()
    return forward


def measure(spec: dict[str, Any], emit=common.emit) -> int:
  """Times the cells of `spec`; returns the exit status (1: the original failed)."""
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  threads = common.cores()
  torch.set_num_threads(threads)
  try:
    config = common.load_config(spec['config'], spec.get('overrides', ()))
    module, torch, dropped = import_original(spec['original'], device)
    if device == 'cuda':
      torch.backends.cudnn.benchmark = True  # as the original's tools/train.py and tools/fusion.py
    net = None  # one network for every cell (the dtype is autocast's), built in the first
  except Exception as e:  # noqa: BLE001 (reported; the parent exits 1)
    traceback.print_exc()
    emit({'event': 'failed', 'where': 'build', 'error': f'{type(e).__name__}: {e}',
          'traceback': traceback.format_exc()})
    return 1
  emit({'event': 'info', 'side': 'original', 'pid': os.getpid(), 'started': time.time(),
        'torch': torch.__version__, 'device': device,
        'device_name': torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu', 'threads': threads,
        'sys_path_dropped': [repr(p) for p in dropped], 'network': config.model.Network})
  size, frames = int(spec['size']), int(spec['frames'])
  stopped: set[str] = set()
  for cell in spec['cells']:
    phase, dtype, batch = cell['phase'], cell['dtype'], int(cell['batch'])
    key = {'side': 'original', 'network': config.model.Network, 'phase': phase, 'dtype': dtype, 'batch': batch}
    if batch < MIN_BATCH:
      emit({'event': 'cell', **key, 'status': 'n/a', 'reason': B1_REASON})
      continue
    if dtype in stopped or common.past(spec.get('deadline')):
      emit({'event': 'cell', **key, 'status': 'skipped',
            'reason': 'after an OOM' if dtype in stopped else 'time budget'})
      continue
    emit({'event': 'progress', 'message': f'original: {phase} {dtype} B={batch}', 'cell': key})
    try:
      if net is None:
        net = Network(module, torch, common.cell_config(config, 'float32', size, frames), device)
      clips, labels = net.inputs(batch, frames, size)
      run = (net.train_runner if phase == 'train' else net.eval_runner)(dtype, clips, labels)
      times = common.time_runs(run, int(spec['warmup']), int(spec['repeats']))
    except Exception as e:  # noqa: BLE001
      if not common.is_oom(e):
        traceback.print_exc()
        emit({'event': 'failed', 'where': f'{phase} {dtype} B={batch}', 'error': f'{type(e).__name__}: {e}',
              'traceback': traceback.format_exc()})
        return 1
      stopped.add(dtype)
      emit({'event': 'cell', **key, 'status': 'OOM', 'error': f'{type(e).__name__}: {str(e)[:300]}'})
    if dtype in stopped:  # after the except block: its traceback (holding the activations) is gone
      clips = labels = run = None
      if device == 'cuda':
        torch.cuda.empty_cache()
      continue
    emit({'event': 'cell', **key, 'status': 'ok', 'times': times, **common.spread(times),
          'clips_per_s': batch / common.spread(times)['median']})
  emit({'event': 'done', 'side': 'original'})
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--spec', required=True, help='JSON file written by scripts/benchmark.py model')
  args = parser.parse_args(argv)
  return measure(common.read_spec(args.spec))


if __name__ == '__main__':
  sys.exit(main())
