"""The model benchmark: a small run, a missing original, and the original's runners (with a stand-in)."""

import argparse
import json

from rgbd_jax.tools.benchmark import model as model_bench


def test_model_benchmark_small_training_step(tmp_path, capsys):
  parser = argparse.ArgumentParser()
  model_bench.add_arguments(parser)
  out = tmp_path / 'out.json'
  args = parser.parse_args(['--skip-eval', '--train-size', '32', '--repeats', '1', '--warmup', '0',
                            '--matmul', '256', '--json', str(out)])
  assert model_bench.run(args) == 0
  result = json.loads(out.read_text())
  assert result['train']['seconds'] > 0 and result['train']['gflop'] > 1
  assert 'original' not in result
  assert 'ours, train step:' in capsys.readouterr().out
  # a wrong --original is reported and fails the command (nothing to time here: no second compile)
  args.original, args.skip_train = str(tmp_path / 'not-a-checkout'), True
  assert model_bench.run(args) == 1
  assert 'not-a-checkout/lib/model not found' in capsys.readouterr().err


_FAKE_ORIGINAL = '''
import torch

SEEN = []


class DSNNet(torch.nn.Module):
  """Stands in for the original's network: records what each call received."""

  def __init__(self, args, num_classes, pretrained):
    super().__init__()
    self.head = torch.nn.Linear(3, num_classes)

  def forward(self, video, heat):
    SEEN.append((self.training, tuple(video.shape), tuple(heat.shape)))
    logits = self.head(video.mean(dim=(2, 3, 4)))
    return (logits, logits, logits, logits), logits.sum() * 0, None
'''


def test_original_runners_use_their_own_shapes_and_modes(tmp_path, monkeypatch):
  import sys
  import torch
  # the importer installs stand-in modules and CPU no-op .cuda(): undone after this test
  for name in ('torchvision', 'torchvision.transforms', 'torchvision.utils', 'utils', 'motionrgbd_model'):
    if name not in sys.modules:  # setitem then delitem: undone, the name is absent again
      monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setattr(torch.Tensor, 'cuda', torch.Tensor.cuda)
  monkeypatch.setattr(torch.nn.Module, 'cuda', torch.nn.Module.cuda)
  model_dir = tmp_path / 'lib' / 'model'
  model_dir.mkdir(parents=True)
  (model_dir / '__init__.py').write_text(_FAKE_ORIGINAL)
  parser = argparse.ArgumentParser()
  model_bench.add_arguments(parser)
  args = parser.parse_args(['--original', str(tmp_path), '--eval-size', '64', '--train-size', '32',
                            '--frames', '8', '--eval-batch', '1', '--train-batch', '2'])
  runners = model_bench.original(args)
  module = sys.modules['motionrgbd_model']
  # built in this order, run in the other: each runner must keep its own inputs and mode
  runners['train']()
  runners['eval']()
  assert module.SEEN == [(True, (2, 3, 8, 32, 32), (2, 1, 8, 32, 32)), (False, (1, 3, 8, 64, 64), (1, 1, 8, 64, 64))]

