"""The data benchmark runs, and its original-style reference path agrees with the pipeline."""

import argparse

from rgbd_jax.tools.benchmark import data as data_bench


def test_data_benchmark_small(tmp_path, capsys):
  parser = argparse.ArgumentParser()
  data_bench.add_arguments(parser)
  args = parser.parse_args(['--frames', '20', '--sample-size', '64', '--repeats', '1', '--workers', '0',
                            '--workdir', str(tmp_path), '--json', str(tmp_path / 'out.json')])
  results = data_bench.measure(args)
  assert results['exact_vs_original_style']['max_abs_grey_levels'] == 0
  assert results['exact_vs_original_style']['heatmap_rel_l2'] <= 1e-3
  assert 0 < results['fast_decode_vs_exact']['mean_abs_grey_levels'] < 5
  assert set(results['ours_breakdown_s']) == {'read', 'decode', 'resize_crop', 'heatmap', 'rest (gather, normalise)'}
  assert all(results[k] > 0 for k in ('ours_s_per_clip', 'fast_decode_s_per_clip', 'original_style_s_per_clip'))
  assert 'original-style loader' in capsys.readouterr().out
  assert (tmp_path / 'out.json').is_file()
  args.skip_original = True
  assert data_bench.run(args) == 0
