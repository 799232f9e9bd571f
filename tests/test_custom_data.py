"""A user's own dataset end to end: tiny videos written with OpenCV -> extract_frames -> make_splits ->
2 training steps and the evaluation (configs/custom.py:tiny, the 'Custom' layout) -> evaluate with
--views and --vis -> predict on a validation video's frames gives evaluate's logits exactly, and on
the video file itself logits within the JPEG re-encoding of the frames.

One training run is shared by the tests of this module (module fixture); its evaluation batch is
1 so that predict's single clip runs the very same compiled program as evaluation.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from rgbd_jax.data import class_names
from rgbd_jax.data import custom_dataset
from rgbd_jax.data import layouts
from rgbd_jax.data import splits

REPO = pathlib.Path(__file__).resolve().parent.parent


def _custom_config(arg=None):
  spec = importlib.util.spec_from_file_location('custom_config', REPO / 'configs' / 'custom.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def write_video(path, frames: int, label: int, seed: int, size=(64, 48)):
  """A square moving left (label 0) or right (label 1) over noise, MJPG in an .avi."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  w, h = size
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (w, h))
  assert writer.isOpened()
  rng = np.random.default_rng(seed)
  for i in range(frames):
    img = rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
    x = (3 * i) % (w - 10) if label == 0 else (w - 10 - (3 * i) % (w - 10))
    img[12:30, x:x + 10] = (40, 60, 220)
    writer.write(img)
  writer.release()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('custom')
  for label, cls in enumerate(('left', 'right')):
    for k in range(3):
      write_video(root / 'videos' / cls / f'clip{k}.avi', 18 + k, label, seed=10 * label + k)
  data = root / 'data'
  extracted = custom_dataset.extract_frames(str(root / 'videos'), str(data), workers=1, progress=False)
  made = custom_dataset.make_splits(str(data), str(data / 'dataset_splits'), valid_fraction=0.34)
  config = _custom_config('tiny')
  config.common.data = str(data)
  config.model.num_classes = made['num_classes']
  config.common.epochs = 1
  config.common.batch_size = 2
  config.common.test_batch_size = 1
  from rgbd_jax.train import evaluation
  from rgbd_jax.train import loop
  summary = loop.train_and_evaluate(config, str(root / 'run'))
  results = evaluation.run(workdir=str(root / 'run'), views='3x3', save_output=True,
                           output=str(root / 'out.npz'), vis_dir=str(root / 'vis'), vis_count=1)
  with np.load(root / 'out.npz') as z:
    saved = {k: z[k] for k in z.files}
  return {'root': root, 'data': data, 'extracted': extracted, 'made': made, 'summary': summary,
          'results': results, 'saved': saved, 'config': config}


def test_frames_and_splits_in_the_custom_layout(run):
  data = run['data']
  assert run['extracted'] == {'videos': 6, 'done': 6, 'skipped': 0, 'frames': 18 * 2 + 19 * 2 + 20 * 2,
                              'failed': []}
  assert sorted(os.listdir(data / 'rgb' / 'left' / 'clip1'))[:2] == ['000000.jpg', '000001.jpg']
  assert len(os.listdir(data / 'rgb' / 'left' / 'clip1')) == 19
  train = splits.read_split(str(data / 'dataset_splits' / 'train.txt'))
  valid = splits.read_split(str(data / 'dataset_splits' / 'valid.txt'))
  assert len(train) == 4 and len(valid) == 2
  assert {r.label for r in valid} == {0, 1}  # one per class
  for r in train + valid:
    assert r.frames == int(r.name[-1]) + 18 and r.label == (0 if r.name.startswith('left/') else 1)
  assert class_names.read(str(data / 'dataset_splits' / 'classes.txt')) == ('left', 'right')
  lay = layouts.layout(run['config'])
  assert lay.folder('left/clip0', 'rgb') == str(data / 'rgb' / 'left' / 'clip0')
  # a second extraction finds everything done
  again = custom_dataset.extract_frames(str(run['root'] / 'videos'), str(data), workers=1, progress=False)
  assert again['skipped'] == 6 and again['done'] == 0


def test_training_steps_and_evaluation_ran(run):
  summary, results = run['summary'], run['results']
  assert summary['steps'] == 2 and summary['last_eval']['num_examples'] == 2
  assert results['num_examples'] == 2 and results['top1'] == summary['last_eval']['top1']
  assert results['views'] == '3x3' and results['multiview_num_examples'] == 2
  assert {'multiview_top1', 'multiview_top1_xs', 'multiview_top1_xm', 'multiview_top1_xl'} <= set(results)
  assert run['saved']['multiview_logits'].shape == run['saved']['logits'].shape
  pictures = sorted(os.listdir(run['root'] / 'vis'))
  assert len(pictures) == 2 and pictures[0].endswith('.gif') and pictures[1].endswith('.png')


def test_predict_equals_evaluate_on_a_split_video(run):
  from rgbd_jax.predict import Recognizer
  recognizer = Recognizer.from_checkpoint(str(run['root'] / 'run'))
  assert recognizer.class_names.names == ('left', 'right')  # from <splits>/classes.txt
  saved = run['saved']
  for i, name in enumerate(saved['names']):
    frames = recognizer.predict(rgb=str(run['data'] / 'rgb' / name))
    # the same clip, the same compiled program: the same logits, bit for bit
    np.testing.assert_array_equal(frames.logits['top1'], saved['logits'][i])
    assert frames.label == saved['preds'][i]
    # the 3x3 views average as evaluate's multi-view pass does
    views = recognizer.predict(rgb=str(run['data'] / 'rgb' / name), views='3x3')
    np.testing.assert_allclose(views.logits['top1'], saved['multiview_logits'][i], rtol=0, atol=1e-6)
    assert views.view_logits['top1'].shape == (9, 2)
    # the video file: its frames before JPEG re-encoding, so close, not equal
    video = recognizer.predict(rgb=str(run['root'] / 'videos' / f'{name}.avi'))
    assert video.frames == frames.frames
    np.testing.assert_allclose(video.logits['top1'], saved['logits'][i], atol=2e-3)
  # pictures of a prediction (the Grad-CAM program evaluate --vis compiled serves it)
  vis = run['root'] / 'predict_vis'
  recognizer.predict(rgb=str(run['root'] / 'videos' / 'left' / 'clip0.avi'), vis_dir=str(vis))
  assert sorted(os.listdir(vis)) == [f'{name}.{ext}' for name in [sorted(os.listdir(vis))[0][:-4]]
                                     for ext in ('gif', 'png')]


def test_predict_script_one_line_per_video_errors_and_json(run, tmp_path):
  data = run['data']
  out = tmp_path / 'p.json'
  gaps = tmp_path / 'gaps'
  shutil.copytree(data / 'rgb' / 'left' / 'clip0', gaps)
  os.remove(gaps / '000003.jpg')
  proc = subprocess.run(
      [sys.executable, str(REPO / 'scripts' / 'predict.py'), '--checkpoint', str(run['root'] / 'run'),
       '--top_k', '2', '--json', str(out), '--views', '1x3',
       str(data / 'rgb' / 'left' / 'clip2'), str(tmp_path / 'missing.mp4'), str(gaps),
       str(run['root'] / 'videos' / 'right' / 'clip2.avi')],
      capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]  # the bad videos: reported, the others done
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2 and lines[0].startswith(str(data / 'rgb' / 'left' / 'clip2') + ': ')
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert errors == [
      f'error: video not found: {tmp_path / "missing.mp4"} (a video file or a folder of frames)',
      f'error: {gaps}: frames are numbered with gaps: 1 missing between 0 and 17 (3); '
      'renumber the frames or extract the video again']
  assert 'Traceback' not in proc.stderr
  results = json.loads(out.read_text())
  assert [r['views'] for r in results] == ['1x3', '1x3']
  first = results[0]
  assert {'headline', 'xs', 'xm', 'xl'} <= set(first['scores'])
  assert len(first['per_view']) == 3 and len(first['top_k']) == 2
  assert first['top_k'][0]['name'] in ('left', 'right')
  assert abs(sum(e['probability'] for e in first['top_k']) - 1) < 1e-6


def test_loop_plots_name_the_classes(run):
  assert (run['root'] / 'run' / 'confusion_matrix.png').exists()
  assert (run['root'] / 'run' / 'learning_curves.png').exists()


def test_split_files_take_trailing_slashes_and_any_spacing(tmp_path):
  path = tmp_path / 'train.txt'
  path.write_text('left/clip0/   18  0\nright/clip1\t19\t1  \r\n')
  records = splits.read_split(str(path))
  assert [(r.name, r.frames, r.label) for r in records] == [('left/clip0', 18, 0), ('right/clip1', 19, 1)]


def test_custom_depth_frames_png_or_jpg(tmp_path):
  config = _custom_config()
  config.common.data = str(tmp_path)
  config.model.Network = 'FusionNet'
  os.makedirs(tmp_path / 'depth' / 'a' / 'v')
  Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / 'depth' / 'a' / 'v' / '000000.png')
  lay = layouts.layout(config)
  assert layouts.frame_path(lay, 'a/v', 7, 'depth') == str(tmp_path / 'depth' / 'a' / 'v' / '000007.png')
  assert layouts.frame_path(lay, 'a/v', 7, 'rgb') == str(tmp_path / 'rgb' / 'a' / 'v' / '000007.jpg')
  config.common.data = str(tmp_path / 'elsewhere')  # no depth frames yet: .jpg
  assert layouts.layout(config).frame(0, 'depth') == '000000.jpg'


def _frames(folder, n, start=0):
  os.makedirs(folder, exist_ok=True)
  for i in range(start, start + n):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(folder, f'{i:06d}.jpg'))


def test_make_splits_from_a_csv_and_its_errors(tmp_path):
  data = tmp_path / 'data'
  for name, n in (('a1', 20), ('a2', 21), ('b1', 22), ('b2', 23)):
    _frames(data / 'rgb' / name, n)
    _frames(data / 'depth' / name, n)
  table = tmp_path / 'labels.csv'
  table.write_text('name,label,split\na1,wave,train\na2,wave,val\nb1/,clap,train\nb2,clap,test\n')
  made = custom_dataset.make_splits(str(data), str(tmp_path / 's'), csv_path=str(table), streams=('rgb', 'depth'))
  assert made['classes'] == ['clap', 'wave']
  assert (tmp_path / 's' / 'train.txt').read_text() == 'a1 20 1\nb1 22 0\n'
  assert (tmp_path / 's' / 'valid.txt').read_text() == 'a2 21 1\nb2 23 0\n'
  assert (tmp_path / 's' / 'classes.txt').read_text() == 'clap\nwave\n'
  os.remove(data / 'depth' / 'b1' / '000021.jpg')
  os.remove(data / 'rgb' / 'a2' / '000005.jpg')
  with pytest.raises(ValueError, match=r'2 video\(s\) cannot go into the splits') as e:
    custom_dataset.make_splits(str(data), str(tmp_path / 's'), csv_path=str(table), streams=('rgb', 'depth'))
  assert f'a2: {data / "rgb" / "a2"}: frames are numbered with gaps' in str(e.value)
  assert 'b1: rgb has 22 frames, depth has 21 frames' in str(e.value)
  table.write_text('a1,1,train\na2,0,maybe\n')
  with pytest.raises(ValueError, match=r'labels.csv:2: split must be train or valid'):
    custom_dataset.make_splits(str(data), str(tmp_path / 's'), csv_path=str(table))


def test_extract_frames_reports_unreadable_videos(tmp_path):
  write_video(tmp_path / 'videos' / 'ok.avi', 5, 0, seed=0)
  (tmp_path / 'videos' / 'broken.mp4').write_bytes(b'\x00' * 100)
  summary = custom_dataset.extract_frames(str(tmp_path / 'videos'), str(tmp_path / 'data'), workers=1,
                                          progress=False)
  assert summary['done'] == 1 and summary['frames'] == 5
  assert len(summary['failed']) == 1 and summary['failed'][0][0].endswith('broken.mp4')
  assert 'broken.mp4' in summary['failed'][0][1]
  assert sorted(os.listdir(tmp_path / 'data' / 'rgb')) == ['ok']  # no half-written folder left
