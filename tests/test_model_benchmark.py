"""The model benchmark: alternating timer, and a small run with and without a (missing) original."""

import argparse
import json

from rgbd_jax.benchmark import model as model_bench


def test_time_alternating_takes_turns_after_each_warmup():
  calls = []
  seconds = model_bench._time_alternating({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                                          warmup=1, repeats=3)
  assert calls == ['a', 'b'] + ['a', 'b'] * 3
  assert set(seconds) == {'a', 'b'} and all(s >= 0 for s in seconds.values())


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
