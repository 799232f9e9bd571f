"""The journal fusion network used as the original keeps it: its three checkpoints (the fusion
network's own and its two DSNV2 streams', saved at different epochs) -> scripts/convert_weights.py
-> one converted directory that evaluate and predict run without the .pth.tar files, each stream at
the sharpness temperature of its own file's epoch -> --to-torch back to the three files. Evaluation
with --views 3x3 takes its single-view results from the middle view. On the tiny synthetic dataset.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch

from conftest import load_config_file
from rgbd_jax import checkpoint
from rgbd_jax.configs import to_json as config_to_json
from rgbd_jax.convert import cli
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import umdr_layout
from rgbd_jax.data import synthetic
from rgbd_jax.models import build
from rgbd_jax.predict import Recognizer
from rgbd_jax.train import evaluation
from test_predict import random_variables

REPO = pathlib.Path(__file__).resolve().parent.parent
# file epochs (the epochs completed, as the original saves them) and bestacc of the three checkpoints
FILES = {'fusion': (3, 50.0), 'rgb': (5, 61.0), 'depth': (20, 72.0)}


def umdr_config(data, network='UMDRFusion'):
  c = load_config_file('configs/synthetic.py', 'tiny')
  c.common.data = str(data)
  c.model.Network = network
  c.model.width, c.model.dim, c.model.heads, c.model.dim_head, c.model.mlp_dim = 0.125, 32, 2, 16, 48
  c.model.N, c.model.sample_duration, c.model.sample_size = 3, 8, 32
  c.model.scc_depth, c.model.tcc_depth = 1, 1
  c.model.sharpness = True  # the temperatures matter
  c.common.epochs = 30
  c.common.test_batch_size = 4
  c.common.xla_opt_level = 0
  return c


def _save(path, state_dict, epoch, bestacc):
  """As the original's training scripts save: {'model', 'epoch', 'bestacc'}."""
  torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
              'epoch': epoch, 'bestacc': bestacc}, str(path))


def _script(*args):
  return subprocess.run([sys.executable, 'scripts/convert_weights.py', *args], capture_output=True, text=True,
                        timeout=600, cwd=str(REPO))


@pytest.fixture(scope='module')
def fusion(tmp_path_factory):
  root = tmp_path_factory.mktemp('umdr_fusion')
  config = umdr_config(root / 'data')
  synthetic.ensure_dataset(config, workers=1, progress=False)
  variables = random_variables(config, seed=4)
  state_dict = torch_export.variables_to_state_dict(variables, config, num_batches_tracked=321)
  parts = dict(zip(('fusion', 'rgb', 'depth'), umdr_layout.split_fusion_state_dict(state_dict)))
  originals = root / 'originals'
  originals.mkdir()
  for name, sd in parts.items():
    _save(originals / f'{name}.pth.tar', sd, *FILES[name])
  config_file = root / 'fusion_config.py'
  config_file.write_text(textwrap.dedent(f"""
      from rgbd_jax.configs import from_json
      def get_config(arg=None):
        return from_json({config_to_json(config)!r})
      """))
  converted = root / 'converted'
  res = _script('--config', str(config_file), '--checkpoint', str(originals / 'fusion.pth.tar'),
                '--rgb_checkpoint', str(originals / 'rgb.pth.tar'),
                '--depth_checkpoint', str(originals / 'depth.pth.tar'), '--out', str(converted))
  assert res.returncode == 0, res.stderr[-3000:]
  saved = {name: torch.load(str(originals / f'{name}.pth.tar'), map_location='cpu') for name in parts}
  # the directory must not need the files
  moved = root / 'moved'
  shutil.move(str(originals), str(moved))
  return {'root': root, 'config': config, 'variables': variables, 'saved': saved, 'converted': converted,
          'moved': moved}


def test_the_converted_directory_holds_all_three_networks(fusion):
  config, variables = checkpoint.load_variables(fusion['converted'])
  assert config.model.Network == 'UMDRFusion' and config.model.rgb_checkpoint == ''
  jax.tree.map(np.testing.assert_array_equal, variables, fusion['variables'])
  info = checkpoint.load_info(fusion['converted'])
  assert info['trained_epoch'] == 2 and info['best_top1'] == 0.5
  assert info['stream_epochs'] == {'rgb': 4, 'depth': 19}  # each file's epoch - 1
  assert info['stream_best_top1'] == {'rgb': 0.61, 'depth': 0.72}
  # the config keys crosscheck takes give the same directory
  keyed = fusion['config'].copy_and_resolve_references()
  keyed.model.rgb_checkpoint = str(fusion['moved'] / 'rgb.pth.tar')
  keyed.model.depth_checkpoint = str(fusion['moved'] / 'depth.pth.tar')
  cli.torch_to_orbax(str(fusion['moved'] / 'fusion.pth.tar'), str(fusion['root'] / 'keyed'), keyed)
  _, again = checkpoint.load_variables(fusion['root'] / 'keyed')
  jax.tree.map(np.testing.assert_array_equal, again, fusion['variables'])
  assert checkpoint.load_info(fusion['root'] / 'keyed')['stream_epochs'] == {'rgb': 4, 'depth': 19}


def test_back_to_the_three_journal_files(fusion, tmp_path):
  out = {name: tmp_path / f'{name}.pth.tar' for name in FILES}
  res = _script('--to-torch', '--checkpoint', str(fusion['converted']), '--out', str(out['fusion']),
                '--rgb_out', str(out['rgb']), '--depth_out', str(out['depth']))
  assert res.returncode == 0, res.stderr[-3000:]
  for name, path in out.items():
    written, source = torch.load(str(path), map_location='cpu'), fusion['saved'][name]
    # the same keys in the same order, shapes, dtypes and values: what load_state_dict(strict=True) takes
    assert list(written['model']) == list(source['model']), name
    for k, v in source['model'].items():
      assert written['model'][k].dtype == v.dtype, k
      np.testing.assert_array_equal(written['model'][k].numpy(), v.numpy(), err_msg=k)
    assert (written['epoch'], written['bestacc']) == FILES[name], name
  assert any(k.endswith('num_batches_tracked') for k in fusion['saved']['rgb']['model'])
  # one file for the fusion network is refused, naming the missing outputs
  with pytest.raises(ValueError, match='give --rgb_out and --depth_out'):
    cli.orbax_to_torch(str(fusion['converted']), str(tmp_path / 'one.pth.tar'))
  res = _script('--to-torch', '--checkpoint', str(fusion['converted']), '--out', str(tmp_path / 'one.pth.tar'))
  assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'Traceback' not in res.stderr


def test_each_stream_runs_at_its_own_epochs_temperature(fusion):
  config = fusion['config']
  temps = tuple(build.sharpness_temperature(config, e) for e in (4, 19))
  assert temps[0] != temps[1]
  recognizer = Recognizer.from_checkpoint(str(fusion['converted']))
  assert recognizer.model.stream_temps == temps
  # model.stream_epoch >= 0 sets both; nothing recorded: common.epochs - 1 (as before)
  assert build.stream_epochs(config, {'rgb': 4, 'depth': 19}) == (4, 19)
  assert build.stream_epochs(config) == (29, 29)
  both = config.copy_and_resolve_references()
  both.model.stream_epoch = 7
  assert build.stream_epochs(both, {'rgb': 4, 'depth': 19}) == (7, 7)
  with pytest.raises(ValueError, match='no streams at epochs of their own'):
    build.build_model(umdr_config(fusion['root'] / 'data', 'DSNV2'), {'rgb': 1, 'depth': 1})
  # the temperature divides each stream's logits: the depth stream's are the same at either rgb epoch
  rng = np.random.default_rng(0)
  rgb, depth = (rng.normal(0, 1, (1, 8, 32, 32, 3)).astype(np.float32) for _ in range(2))
  run = lambda epochs: build.build_model(config, epochs).apply(fusion['variables'], rgb, depth, train=False)
  own, same = run({'rgb': 4, 'depth': 19}), run({'rgb': 19, 'depth': 19})
  np.testing.assert_array_equal(own['logits_depth'], same['logits_depth'])
  np.testing.assert_allclose(own['logits_rgb'] * temps[0], same['logits_rgb'] * temps[1], rtol=1e-5, atol=1e-6)
  assert not np.allclose(own['logits_rgb'], same['logits_rgb'])


def test_evaluate_the_directory_and_the_middle_view_is_the_single_view(fusion, monkeypatch):
  single = evaluation.run(checkpoint_path=str(fusion['converted']), save_output=True,
                          output=str(fusion['root'] / 'single.npz'))
  with monkeypatch.context() as m:
    m.setattr(evaluation, 'evaluate', lambda *a, **k: pytest.fail('a second, single-view pass ran'))
    views = evaluation.run(checkpoint_path=str(fusion['converted']), views='3x3', save_output=True,
                           output=str(fusion['root'] / 'views.npz'))
    assert evaluation.middle_view(evaluation.views_lib.parse('3x3')) == 4
    assert evaluation.middle_view(evaluation.views_lib.parse('2x3')) is None
  assert single['epoch'] == 2 and single['num_examples'] == 12
  named = [k for k in single if k.startswith('top1')]
  assert {'top1', 'top1_rgb', 'top1_depth', 'top1_rgb+depth', 'top1_fusion'} <= set(named)
  for k in named + ['num_examples']:
    assert views[k] == single[k], k
  np.testing.assert_allclose(views['ce_loss'], single['ce_loss'], rtol=1e-6)  # summed in another order
  with np.load(fusion['root'] / 'single.npz') as a, np.load(fusion['root'] / 'views.npz') as b:
    for k in ('names', 'logits', 'labels', 'preds'):
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert b['multiview_logits'].shape == a['logits'].shape
  assert 'multiview_top1' in views and views['views'] == '3x3'


def _cams(explain, variables, clip, temp):
  """Grad-CAM of classes 0 and 1 of one clip: {stream: (2, T, S, S)}."""
  out = [explain(variables, {k: v[None] for k, v in clip.items()}, temp, [c]) for c in (0, 1)]
  assert [int(o['target'][0]) for o in out] == [0, 1]
  return {s: np.stack([o[s]['cam'][0] for o in out]) for s in out[0] if s in ('rgb', 'depth')}


def _assert_class_dependent(cams):
  for stream, maps in cams.items():
    assert np.isfinite(maps).all() and maps.max() == 1.0, stream  # divided by the clip's maximum
    for c in (0, 1):
      assert maps[c].std() > 1e-3, (stream, c)  # not constant over the clip
    assert np.abs(maps[0] - maps[1]).max() > 1e-2, stream  # another class, another map


def test_grad_cam_of_the_journal_networks(fusion, tmp_path):
  from rgbd_jax.train import visualize  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  clip = lambda: rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)  # noqa: E731
  # DSNV2: on SMS_layers' output (no FRP heatmap row)
  config = umdr_config(fusion['root'] / 'data', 'DSNV2')
  variables = random_variables(config, seed=5)
  explain = visualize.explainer(config)
  video = {'video': clip()}
  cams = _cams(explain, variables, video, 0.05)
  assert set(cams) == {'rgb'}
  _assert_class_dependent(cams)
  out = explain(variables, {'video': video['video'][None]}, 0.05, [0])
  assert set(out['rgb']) == {'cam'}
  paths = visualize.explain_and_render(explain, variables, video, 0.05, [f'c{i}' for i in range(6)],
                                       str(tmp_path / 'dsnv2'), 'dsnv2', target=1)
  assert [os.path.basename(p) for p in paths] == ['dsnv2.png', 'dsnv2.gif']
  assert all(os.path.getsize(p) > 0 for p in paths)
  # UMDRFusion: on each frozen stream's SMS_layers, the gradient of the combined logits through them
  info = checkpoint.load_info(fusion['converted'])
  explain = visualize.explainer(fusion['config'], info['stream_epochs'])
  _assert_class_dependent(_cams(explain, fusion['variables'], {'rgb': clip(), 'depth': clip()}, 1.0))


def test_predict_and_its_pictures(fusion, tmp_path):
  recognizer = Recognizer.from_checkpoint(str(fusion['converted']))
  rng = np.random.default_rng(2)
  rgb = rng.integers(0, 255, (12, 40, 48, 3), dtype=np.uint8)
  depth = rng.integers(0, 255, (12, 40, 48, 3), dtype=np.uint8)
  prediction = recognizer.predict(rgb=rgb, depth=depth, vis_dir=str(tmp_path))
  assert set(prediction.logits) >= {'top1', 'top1_rgb', 'top1_depth', 'top1_fusion'}
  files = sorted(os.listdir(tmp_path))
  assert [f[-4:] for f in files] == ['.gif', '.png']
  assert all(os.path.getsize(tmp_path / f) > 0 for f in files)


def test_train_py_runs_the_streams_at_their_files_epochs_and_records_them(fusion, tmp_path):
  """train.py on UMDRFusion reads each stream's epoch from its checkpoint (FeatureCapter's rule),
  keeps it in the run's checkpoints, and evaluate/predict of the workdir use it without the files."""
  from rgbd_jax.train import loop
  from rgbd_jax.train import pretrained
  config = umdr_config(fusion['root'] / 'data')
  config.model.rgb_checkpoint = str(fusion['moved'] / 'rgb.pth.tar')
  config.model.depth_checkpoint = str(fusion['moved'] / 'depth.pth.tar')
  expected = {'rgb': FILES['rgb'][0] - 1, 'depth': FILES['depth'][0] - 1}  # the files hold epoch + 1
  assert pretrained.stream_epochs(config) == expected
  assert pretrained.stream_epochs(umdr_config(fusion['root'] / 'data', 'DSNV2')) is None
  config.common.max_steps = 1
  config.common.batch_size = 2
  workdir = tmp_path / 'run'
  loop.train_and_evaluate(config, str(workdir))
  ckpts = checkpoint.TrainCheckpoints(str(workdir))
  try:
    assert ckpts.read_meta('latest')['stream_epochs'] == expected
  finally:
    ckpts.close()
  weights = evaluation.source_variables(str(workdir), '', 'latest', None)
  assert weights.stream_epochs == expected
  temps = build.build_model(weights.config, weights.stream_epochs).stream_temps
  assert temps == tuple(build.sharpness_temperature(weights.config, expected[s]) for s in build.STREAMS)
  assert temps[0] != temps[1]
