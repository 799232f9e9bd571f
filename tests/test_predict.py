"""rgbd_jax.predict on a tiny network with random weights: inputs (array, frame folder, lossless video
file with either decoder: the same logits bit for bit), 16-bit depth through the dataset's depth path,
views, the epoch -> temperature rule, class names, JSON, and bad inputs with messages that name the
file. All forward passes have one shape (batch 1), so one compilation serves the module.
"""

import json
import os
import pathlib
import subprocess
import sys

import av
import flax
import numpy as np
import pytest
from PIL import Image

from rgbd_jax import checkpoint
from rgbd_jax.data import transforms
from rgbd_jax.data import video as video_lib
from rgbd_jax.data import views as views_lib
from rgbd_jax.models import build
from rgbd_jax.predict import Recognizer

from conftest import make_random_variables, make_tiny_config

N_FRAMES = 21
REPO = pathlib.Path(__file__).resolve().parent.parent


def tiny(network='I3DWTrans', **overrides):
  c = make_tiny_config(network)
  c.model.N = 1
  c.model.sample_duration = 8
  c.model.sample_size = 32
  c.model.w = 4
  c.dataset.low_frames, c.dataset.media_frames, c.dataset.high_frames = 2, 4, 6
  c.dataset.resize = (48, 40)
  c.dataset.crop_size = 36
  c.common.test_batch_size = 1
  c.common.xla_opt_level = 0
  c.common.dataset = 'NTU'
  c.model.num_classes = 60
  for k, v in overrides.items():
    section, key = k.split('.')
    c[section][key] = v
  return c


def random_variables(config, seed=0):
  flat = flax.traverse_util.flatten_dict(make_random_variables(build.variable_shapes(config), seed))
  # positive BatchNorm variances, modest weights: finite, varied logits
  return flax.traverse_util.unflatten_dict(
      {k: (np.abs(v) + 0.5 if k[-1] == 'var' else 0.3 * v) for k, v in flat.items()})


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  path = tmp_path_factory.mktemp('pred') / 'converted'
  config = tiny()
  checkpoint.save_variables(path, random_variables(config), config, info={'trained_epoch': 4})
  return path


@pytest.fixture(scope='module')
def recognizer(converted):
  return Recognizer.from_checkpoint(str(converted))


@pytest.fixture(scope='module')
def frames():
  rng = np.random.default_rng(1)
  base = rng.integers(0, 200, (48, 64, 3), dtype=np.uint8)
  out = []
  for i in range(N_FRAMES):
    f = base.copy()
    f[10:24, 2 * i:2 * i + 12] = (250, 30, 30)  # something moves: a non-zero FRP heatmap
    out.append(f)
  return np.stack(out)


def write_folder(folder, frames, start=0, fmt='{:06d}.png'):
  os.makedirs(folder, exist_ok=True)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(os.path.join(folder, fmt.format(start + i)))
  return folder


def write_lossless_video(path, frames):
  container = av.open(str(path), 'w')
  stream = container.add_stream('ffv1', rate=10)
  stream.height, stream.width = frames.shape[1:3]
  stream.pix_fmt = 'bgr0'
  for f in frames:
    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format='rgb24')):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()
  return path


def test_array_folder_and_video_give_the_same_logits(recognizer, frames, tmp_path, monkeypatch):
  from_array = recognizer.predict(rgb=frames, name='clip')
  from_folder = recognizer.predict(rgb=write_folder(tmp_path / 'f', frames, start=1))
  video = write_lossless_video(tmp_path / 'clip.mkv', frames)
  from_video = recognizer.predict(rgb=str(video))
  monkeypatch.setattr(video_lib, 'av', None)  # the OpenCV decoder
  assert video_lib.backend() == 'opencv'
  from_opencv = recognizer.predict(rgb=str(video))
  for p in (from_folder, from_video, from_opencv):
    assert p.frames == N_FRAMES
    for name, logits in from_array.logits.items():
      np.testing.assert_array_equal(p.logits[name], logits)
  assert set(from_array.logits) >= {'top1', 'top1_xs', 'top1_xm', 'top1_xl'}
  assert np.all(np.isfinite(from_array.logits['top1']))


def test_clip_is_the_evaluation_clip(recognizer, frames):
  _, _, (clip,) = recognizer.clips(rgb=frames)
  config = recognizer.config
  indices = views_lib.clip_indices(N_FRAMES, 8)
  transform = transforms.FrameTransform(config, transforms.clip_params(config, False, None))
  expected = np.stack([transform(Image.fromarray(frames[i]), '') for i in indices])
  np.testing.assert_array_equal(clip['video'], expected)


def test_epoch_sets_the_temperature_and_names(converted, recognizer, tmp_path):
  assert recognizer.epoch == 4
  assert recognizer.temperature == build.sharpness_temperature(recognizer.config, 4)
  later = Recognizer.from_checkpoint(str(converted), epoch=40)
  assert later.temperature == 0.07 and later.temperature != recognizer.temperature
  assert recognizer.class_names.names[0] == 'drink water' and recognizer.class_names.known
  labels = tmp_path / 'labels.txt'
  labels.write_text('\n'.join(f'action {i}' for i in range(60)) + '\n')
  named = Recognizer.from_checkpoint(str(converted), labels=str(labels))
  assert named.class_names.names[3] == 'action 3'
  labels.write_text('a\nb\nc\n')
  with pytest.raises(ValueError, match=r'labels.txt names 3 classes, but the model has 60'):
    Recognizer.from_checkpoint(str(converted), labels=str(labels))


def test_no_epoch_with_sharpness_is_an_error(tmp_path):
  config = tiny()
  checkpoint.save_variables(tmp_path / 'c', random_variables(config), config)  # no info.json
  with pytest.raises(ValueError, match='which epoch trained it'):
    Recognizer.from_checkpoint(str(tmp_path / 'c'))
  assert Recognizer.from_checkpoint(str(tmp_path / 'c'), epoch=0).temperature == 0.04


def test_views_average_and_the_middle_view_is_the_single_view(recognizer, frames):
  single = recognizer.predict(rgb=frames)
  three = recognizer.predict(rgb=frames, views='3x1')
  assert three.view_logits['top1'].shape == (3, 60)
  np.testing.assert_array_equal(three.view_logits['top1'][1], single.logits['top1'])
  np.testing.assert_allclose(three.logits['top1'], three.view_logits['top1'].mean(0), rtol=1e-6)
  assert three.view_indices[1] == single.view_indices[0]
  assert three.view_indices[0] != three.view_indices[2]
  crops = recognizer.predict(rgb=frames, views='1x3')
  assert [b[0] for b in crops.view_crops] == [0, 6, 12]  # left, centre, right of 48 wide
  assert crops.view_crops[1] == transforms.clip_params(recognizer.config, False, None).crop
  np.testing.assert_array_equal(crops.view_logits['top1'][1], single.logits['top1'])
  with pytest.raises(ValueError, match='CxS'):
    recognizer.predict(rgb=frames, views='three')


def test_crops_through_the_evaluation_crop():
  nv = tiny(**{'common.dataset': 'NvGesture', 'dataset.resize': (96, 72)})
  eval_crop = transforms.clip_params(nv, False, None).crop
  assert eval_crop[:2] == (32, 32)  # NvGesture's fixed evaluation crop, not the centre
  assert [views_lib.crop_params(nv, s, 3).crop[:2] for s in range(3)] == [(0, 32), (32, 32), (60, 32)]
  assert [views_lib.crop_params(nv, s, 5).crop[:2] for s in range(5)] == [
      (0, 32), (16, 32), (32, 32), (46, 32), (60, 32)]
  assert [views_lib.crop_params(nv, s, 2).crop[0] for s in range(2)] == [0, 60]
  tall = tiny(**{'dataset.resize': (40, 64)})
  assert [views_lib.crop_params(tall, s, 3).crop[:2] for s in range(3)] == [(2, 0), (2, 14), (2, 28)]


def test_view_rules():
  for n in (8, 21, 64, 300):
    for clips in (1, 2, 3, 5):
      for c in range(clips):
        idx = views_lib.clip_indices(n, 16, c, clips)
        start, stop = views_lib.sampling.segments(n, 16)
        assert np.all((start <= idx) & (idx < stop))
      if clips % 2:
        np.testing.assert_array_equal(views_lib.clip_indices(n, 16, clips // 2, clips),
                                      views_lib.sampling.sample_indices(n, 16))
  assert str(views_lib.parse(' 3 x 2 ')) == '3x2' and len(views_lib.parse('3x2')) == 6


def test_json_and_line(recognizer, frames):
  p = recognizer.predict(rgb=frames, name='clip', views='1x2')
  d = json.loads(json.dumps(p.to_dict(3)))
  assert d['video'] == 'clip' and d['frames'] == N_FRAMES and d['epoch'] == 4 and d['views'] == '1x2'
  assert {'headline', 'xs', 'xm', 'xl', 'xs+xm'} <= set(d['scores'])
  assert len(d['top_k']) == 3 and d['prediction'] == d['top_k'][0]
  assert [v['crop'] for v in d['per_view']] == [0, 1] and len(d['logits']['headline']) == 60
  assert p.line(2).startswith('clip: ') and p.line(2).count(',') == 1


def test_depth_16bit_frames_take_the_depth_path(converted, tmp_path):
  config = tiny(**{'dataset.type': 'K'})
  rec = Recognizer(config, random_variables(config), epoch=0)
  rng = np.random.default_rng(3)
  depth = np.zeros((N_FRAMES, 240, 320), np.uint16)
  depth[:, 60:200, 100:220] = rng.integers(500, 3000, (N_FRAMES, 140, 120), dtype=np.uint16)
  folder = tmp_path / 'depth'
  os.makedirs(folder)
  for i, d in enumerate(depth):
    Image.fromarray(d).save(folder / f'MDepth-{i + 1:08d}.png')
  _, _, (from_folder,) = rec.clips(depth=str(folder))
  _, _, (from_array,) = rec.clips(depth=depth)
  np.testing.assert_array_equal(from_folder['video'], from_array['video'])
  transform = transforms.FrameTransform(config, transforms.clip_params(config, False, None))
  indices = views_lib.clip_indices(N_FRAMES, 8)
  expected = np.stack([transform(Image.fromarray(depth[i]), '') for i in indices])  # mode I;16: ROI + JET
  np.testing.assert_array_equal(from_folder['video'], expected)
  with pytest.raises(ValueError, match=r"a depth network \(dataset.type='K'\): give depth="):
    rec.predict(rgb=depth)


def test_bad_inputs_name_the_file(recognizer, frames, tmp_path):
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  with pytest.raises(ValueError, match=f'{empty}: empty file'):
    recognizer.predict(rgb=str(empty))
  garbage = tmp_path / 'garbage.webm'
  garbage.write_bytes(b'not a video' * 100)
  with pytest.raises(ValueError, match=f'{garbage}: (cannot open|no frame)'):
    recognizer.predict(rgb=str(garbage))
  with pytest.raises(FileNotFoundError, match='video not found'):
    recognizer.predict(rgb=str(tmp_path / 'nowhere.mp4'))
  gaps = write_folder(tmp_path / 'gaps', frames[:5])
  os.remove(gaps / '000002.png')
  with pytest.raises(ValueError, match=r'gaps: frames are numbered with gaps: 1 missing between 0 and 4 \(2\)'):
    recognizer.predict(rgb=str(gaps))
  mixed = write_folder(tmp_path / 'mixed', frames[:3])
  Image.fromarray(frames[3]).save(mixed / '000003.jpg')
  with pytest.raises(ValueError, match='different names or types'):
    recognizer.predict(rgb=str(mixed))
  with pytest.raises(ValueError, match='no frame images'):
    recognizer.predict(rgb=str(os.makedirs(tmp_path / 'none') or tmp_path / 'none'))
  odd = write_folder(tmp_path / 'odd', frames)
  Image.fromarray(frames[11][:30]).save(odd / '000011.png')  # another size, in the clip (frames 0 3 5 8 11 ...)
  with pytest.raises(ValueError, match=r'000011.png: frame is RGB \(64, 30\)'):
    recognizer.predict(rgb=str(odd))


def test_fusion_needs_both_streams_of_one_length(frames):
  config = tiny('FusionNet')
  rec = Recognizer(config, random_variables(config), epoch=0)
  with pytest.raises(ValueError, match=r'the fusion network \(rgb and depth\): give rgb= and depth='):
    rec.predict(rgb=frames)
  with pytest.raises(ValueError, match=r'differ in length: <rgb array> has 21 frames, <depth array> has 20'):
    rec.predict(rgb=frames, depth=frames[:20])
  depth16 = (frames[..., 0].astype(np.uint16) * 20)
  _, _, (clip,) = rec.clips(rgb=frames, depth=depth16)  # one rgb and one (16-bit) depth clip, same frames
  assert sorted(clip) == ['depth', 'rgb'] and clip['rgb'].shape == clip['depth'].shape == (8, 32, 32, 3)


def test_original_checkpoint_needs_a_config(tmp_path):
  # a .pth.tar carries no dataset settings; with --config it goes through evaluate's loader
  # (evaluation.source_variables: converted on the fly, its epoch field - 1 as the epoch)
  path = tmp_path / 'model_best.pth.tar'
  path.write_bytes(b'')
  with pytest.raises(ValueError, match='is a PyTorch file: give --config'):
    Recognizer.from_checkpoint(str(path))


def test_ntu_roi_prepares_a_raw_video_as_prepare_ntu(recognizer, converted, tmp_path):
  from rgbd_jax.data import ntu_prepare  # pylint: disable=g-import-not-at-top
  from test_data_prepare_ntu import A, B, write_raw  # pylint: disable=g-import-not-at-top
  raw = tmp_path / 'NTU'
  write_raw(raw, A, 12, lambda k: True)
  write_raw(raw, B, 12, lambda k: k != 3)  # frame 3: no subject found, a centred window
  ntu_prepare.prepare(str(raw), str(tmp_path / 'prepared'), workers=1, progress=False)
  masks = raw / 'nturgb+d_depth_masked'
  for name in (A, B):
    video = raw / 'nturgb+d_rgb' / f'{name}.avi'
    prepared = recognizer.predict(rgb=str(tmp_path / 'prepared' / 'Images' / name))
    from_raw = recognizer.predict(rgb=str(video), ntu_roi=str(masks))
    own_folder = recognizer.predict(rgb=str(video), ntu_roi=str(masks / name[:-4]))
    # the clip evaluation reads from the prepared dataset, bit for bit
    np.testing.assert_array_equal(from_raw.logits['top1'], prepared.logits['top1'])
    np.testing.assert_array_equal(own_folder.logits['top1'], prepared.logits['top1'])
    assert from_raw.name == str(video) and from_raw.frames == 12
    uncropped = recognizer.predict(rgb=str(video))
    assert not np.array_equal(uncropped.logits['top1'], from_raw.logits['top1'])
  renamed = tmp_path / 'holiday.avi'
  os.symlink(raw / 'nturgb+d_rgb' / f'{A}.avi', renamed)
  with pytest.raises(ValueError, match='holiday.avi: .*not an NTU-RGBD video name'):
    recognizer.predict(rgb=str(renamed), ntu_roi=str(masks))
  with pytest.raises(FileNotFoundError, match=f'no masked depth maps of {A} in'):
    recognizer.predict(rgb=str(raw / 'nturgb+d_rgb' / f'{A}.avi'), ntu_roi=str(tmp_path))
  with pytest.raises(ValueError, match='give rgb= its path'):
    recognizer.predict(rgb=np.zeros((8, 32, 32, 3), np.uint8), ntu_roi=str(masks))
  # the script's flag
  res = subprocess.run([sys.executable, 'scripts/predict.py', '--checkpoint', str(converted), '--top_k', '2',
                        '--ntu_roi', str(masks), str(raw / 'nturgb+d_rgb' / f'{A}.avi')],
                       capture_output=True, text=True, timeout=600, cwd=str(REPO))
  assert res.returncode == 0, res.stderr[-3000:]
  expected = recognizer.predict(rgb=str(raw / 'nturgb+d_rgb' / f'{A}.avi'), ntu_roi=str(masks)).line(2)
  assert res.stdout.strip() == expected
