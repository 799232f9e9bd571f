"""The data benchmark: a small run (fresh processes, alternating kinds, medians), a stand-in for
the original's dataset class, and, where the original's code is at hand, its loader itself."""

import argparse
import os
import pathlib
import subprocess

import pytest

from rgbd_jax.tools.benchmark import data as data_bench

MIRROR = pathlib.Path('/work/.mirror/damo-cv+MotionRGBD/repo')

# Stands in for the original's lib/datasets/NTU.py: its constructor's arguments, a clip of its shapes.
_FAKE_NTU = '''
import numpy as np, torch
class NTUData:
  def __init__(self, args, ground_truth, modality, phase='train'):
    assert modality == 'rgb' and phase in ('train', 'valid') and open(ground_truth).read()
    self.args = args
  def __len__(self):
    return 2
  def __getitem__(self, index):
    a = self.args
    clip = torch.full((3, a.sample_duration, a.sample_size, a.sample_size), -127.5 / 128)
    return clip, torch.zeros(1, a.sample_duration, a.sample_size, a.sample_size), 0, 'name'
'''


def _args(tmp_path, *extra):
  parser = argparse.ArgumentParser()
  data_bench.add_arguments(parser)
  return parser.parse_args(['--frames', '20', '--videos', '2', '--clips', '2', '--rounds', '1', '--workers', '0,1',
                            '--sample-size', '64', '--workdir', str(tmp_path / 'work'), *extra])


def test_data_benchmark_small(tmp_path, capsys):
  fake = tmp_path / 'fake' / 'lib' / 'datasets'
  fake.mkdir(parents=True)
  (fake / 'NTU.py').write_text(_FAKE_NTU)
  results = data_bench.measure(_args(tmp_path, '--original', str(tmp_path / 'fake'), '--json', str(tmp_path / 'out.json')))
  assert set(results['stages']) == {'jpeg', 'fast', 'packed'} and set(results['pipeline']['packed']) == {'0', '1'}
  for kind, s in results['stages'].items():
    assert s['clips_per_s_per_core']['median'] > 0, kind
    assert {'decode_ms_per_clip', 'geometry_ms_per_clip', 'other_ms_per_clip'} <= set(s)
  for kind, per_workers in results['pipeline'].items():
    assert all(p['clips_per_s_per_core']['median'] > 0 and p['clips_per_s_wall']['median'] > 0
               for p in per_workers.values()), kind
  assert results['original']['clips_per_s_per_core']['median'] > 0
  f = results['fast_vs_exact']  # the same draws: close, but not the same pixels
  assert 0 < f['mean_abs_grey_levels'] < 8 and f['within_2_levels'] > 0.5, f
  assert results['original_eval_clip_vs_ours']['max_abs_grey_levels'] > 0  # the stand-in's grey clip
  out = capsys.readouterr()
  assert 'packed build' in out.out and "the original's loader" in out.out
  assert 'leaked' not in out.err and 'Exception ignored' not in out.err
  assert (tmp_path / 'out.json').is_file()


@pytest.mark.skipif(not MIRROR.is_dir(), reason='no checkout of the original MotionRGBD at hand')
def test_against_the_original_dataset_class(tmp_path):
  """The original's own NTUData (lib/datasets/base.py + NTU.py, torchvision stood in for) runs in
  its round, and its evaluation clip of the benchmark's video equals ours."""
  checkout = tmp_path / 'original'
  for path in ('lib/datasets/base.py', 'lib/datasets/NTU.py'):
    (checkout / path).parent.mkdir(parents=True, exist_ok=True)
    text = subprocess.run(['git', '-C', str(MIRROR), 'show', f'HEAD:{path}'], capture_output=True, text=True,
                          check=True).stdout
    (checkout / path).write_text(text)
  args = _args(tmp_path, '--original', str(checkout), '--workers', '')
  root = str(tmp_path / 'work')
  data_bench.prepare(root, args.frames, args.videos, args.sample_size)
  check = data_bench._fresh_process(data_bench.original_eval_check, str(checkout), root, args.sample_size)
  assert check['max_abs_grey_levels'] == 0 and check['heatmap_rel_l2'] <= 1e-3, check
  timed = data_bench._fresh_process(data_bench.original_round, str(checkout), root, args.sample_size, 1, 0)
  assert timed['cpu_s'] > 0
