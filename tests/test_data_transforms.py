"""Sampling, per-frame transforms, depth treatment and the vectorised heatmap against plain references."""

import logging

import cv2
import numpy as np
from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import depth
from rgbd_jax.data import dynamic_image
from rgbd_jax.data import sampling
from rgbd_jax.data import transforms


# ------------------------------------------------------------------------------------------- sampling

def _segment_reference(n, d):
  """The original's rule spelled out with Python floats and ranges."""
  segs = [range(int(n * i / d), max(int(n * i / d) + 1, int(n * (i + 1) / d))) for i in range(d)]
  return segs, [int(np.mean(s)) for s in segs]


@pytest.mark.parametrize('n', [17, 23, 40, 63, 64, 65, 100, 301, 1000])
@pytest.mark.parametrize('d', [16, 64])
def test_eval_indices_are_segment_centres(n, d):
  _, centres = _segment_reference(n, d)
  np.testing.assert_array_equal(sampling.sample_indices(n, d), centres)


def test_train_indices_random_within_segments_and_seeded():
  segs, _ = _segment_reference(150, 64)
  draws = [sampling.sample_indices(150, 64, np.random.default_rng(s)) for s in range(20)]
  for idx in draws:
    assert all(i in seg for i, seg in zip(idx, segs))
  assert len({tuple(d) for d in draws}) > 1
  np.testing.assert_array_equal(sampling.sample_indices(150, 64, np.random.default_rng(3)), draws[3])


# ---------------------------------------------------------------------------------- resize and crop

def _image(w, h, seed=0, mode='RGB'):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)).astype(np.int16)
  img = np.clip(smooth + rng.integers(-30, 31, smooth.shape), 0, 255).astype(np.uint8)
  return Image.fromarray(img).convert(mode)


# (source size, dataset.resize, crop box): the configs' geometries, eval and training crops.
GEOMETRIES = [
    ((640, 480), (320, 240), (48, 8, 272, 232)),      # NTU eval
    ((640, 480), (320, 240), (5, 11, 229, 235)),      # NTU train offsets
    ((640, 480), (320, 240), (60, 20, 260, 220)),     # THU-READ eval (crop 200)
    ((320, 240), (256, 256), (32, 32, 256, 256)),     # NvGesture eval (fixed 32, 32), upsampling rows
    ((176, 100), (256, 256), (16, 16, 240, 240)),     # Jester-like frame
    ((512, 424), (320, 240), (48, 8, 272, 232)),      # a depth-sized frame: scale 1.6, 1.7666...
    ((641, 479), (320, 240), (48, 8, 272, 232)),      # odd sizes: must fall back, still exact
]


@pytest.mark.parametrize('src,size,box', GEOMETRIES)
def test_resize_crop_is_bit_identical_to_resize_then_crop(src, size, box):
  img = _image(*src)
  ours = np.asarray(transforms.resize_crop(img, size, box))
  reference = np.asarray(img.resize(size).crop(box))  # Pillow's default filter, as the original calls it
  np.testing.assert_array_equal(ours, reference)


def test_box_resampling_is_used_where_exact():
  assert transforms._box_is_exact(640, 320, 48, 224)
  assert transforms._box_is_exact(480, 240, 8, 224)
  assert not transforms._box_is_exact(641, 320, 48, 224)


def test_default_resize_filter_is_bicubic():
  img = _image(64, 48, seed=3)
  np.testing.assert_array_equal(np.asarray(img.resize((40, 30))),
                                np.asarray(img.resize((40, 30), transforms.RESAMPLE)))


def test_rotation_by_zero_is_an_exact_identity():
  frame = np.asarray(_image(640, 480, seed=1))
  np.testing.assert_array_equal(transforms.rotate(frame, 0), frame)
  assert not np.array_equal(transforms.rotate(frame, 7), frame)


def test_rgbx_rotation_equals_the_three_channel_warp():
  """FrameTransform rotates through 4 channels (2x faster in OpenCV): the same pixels, bit for bit."""
  rng = np.random.default_rng(5)
  for k in range(40):
    w, h = (640, 480) if k < 4 else (int(rng.integers(8, 400)), int(rng.integers(8, 300)))
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if k % 2 else np.asarray(_image(w, h, seed=k))
    angle = int(rng.integers(-10, 10)) or 3
    out = transforms.rotate_rgb(Image.fromarray(frame), angle)
    assert out.mode == 'RGB' and out.size == (w, h)
    np.testing.assert_array_equal(np.asarray(out), transforms.rotate(frame, angle), err_msg=f'{w}x{h} {angle}')


def _config(**dataset):
  c = configs.base_config()
  c.model.sample_size = 64
  for k, v in dataset.items():
    c.dataset[k] = v
  return c


def test_clip_params_eval_and_nvgesture_rules():
  c = _config()
  p = transforms.clip_params(c, False, None)
  assert p.crop == (48, 8, 272, 232) and not p.flip and p.angle == 0
  c.common.dataset = 'NvGesture'
  c.dataset.resize = (256, 256)
  assert transforms.clip_params(c, False, None).crop == (32, 32, 256, 256)
  lefts = {transforms.clip_params(c, True, np.random.default_rng(s)).crop[0] for s in range(200)}
  assert min(lefts) >= 10 and max(lefts) == 256 - 224  # offsets from 10, upper bound inclusive


def test_clip_params_training_draws():
  c = _config(flip=0.5, rotated=0.5, angle=(-10, 10))
  params = [transforms.clip_params(c, True, np.random.default_rng(s)) for s in range(300)]
  lefts = {p.crop[0] for p in params}
  assert min(lefts) >= 0 and max(lefts) == 320 - 224 - 1  # numpy randint: upper bound exclusive
  assert 0.3 < np.mean([p.flip for p in params]) < 0.7
  angles = [p.angle for p in params]
  assert min(angles) >= -10 and max(angles) <= 9 and 0.3 < np.mean([a != 0 for a in angles]) < 0.7


def test_crop_larger_than_resize_is_an_error():
  with pytest.raises(ValueError, match='crop_size'):
    transforms.clip_params(_config(resize=(200, 150)), False, None)


def test_frame_transform_matches_the_original_order_with_rotation_and_flip():
  c = _config()
  img = _image(640, 480, seed=2)
  p = transforms.ClipParams(crop=(10, 5, 234, 229), flip=True, angle=-7, blur=False)
  ours = transforms.FrameTransform(c, p)(img, 'test')
  m = cv2.getRotationMatrix2D((320.0, 240.0), -7, 1.0)
  ref = Image.fromarray(cv2.warpAffine(np.asarray(img), m, (640, 480))).resize((320, 240)).crop(p.crop)
  ref = np.asarray(ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((64, 64)))
  np.testing.assert_array_equal(ours, ref)


def test_fast_decode_is_close_but_faster_path():
  import io
  img = _image(640, 480, seed=4)
  buf = io.BytesIO()
  img.save(buf, 'JPEG', quality=90)
  full = transforms.decode(buf.getvalue(), 'x')
  draft = transforms.decode(buf.getvalue(), 'x', (320, 240))
  assert full.size == (640, 480) and draft.size == (320, 240)
  c = _config()
  p = transforms.clip_params(c, False, None)
  a = transforms.FrameTransform(c, p)(full, 'x').astype(int)
  b = transforms.FrameTransform(c, p)(draft, 'x').astype(int)
  assert np.abs(a - b).mean() < 8


@pytest.mark.parametrize('angle,flip', [(0, False), (-7, True), (9, False)])
def test_fast_decode_keeps_the_geometry(angle, flip):
  """DCT-domain decoding changes the filter, not the sampling grid: with the same draws (crop, flip,
  rotation about the centre) the fast frame lines up with the exact one. Shifting either by one pixel
  in any direction makes them differ much more than they do in place."""
  import io
  img = _image(640, 480, seed=5)
  buf = io.BytesIO()
  img.save(buf, 'JPEG', quality=90)
  c = _config()
  c.model.sample_size = 224  # no final resize: one pixel here is one pixel of the resized frame
  p = transforms.ClipParams(crop=(37, 6, 261, 230), flip=flip, angle=angle, blur=False)
  exact = transforms.FrameTransform(c, p)(transforms.decode(buf.getvalue(), 'x'), 'x').astype(float)
  fast = transforms.FrameTransform(c, p)(transforms.decode(buf.getvalue(), 'x', (320, 240)), 'x').astype(float)
  inner = (slice(4, -4), slice(4, -4))

  def gap(dy, dx):
    return np.abs(np.roll(fast, (dy, dx), axis=(0, 1))[inner] - exact[inner]).mean()
  in_place = gap(0, 0)
  assert in_place < 8, in_place  # the filters differ (DCT-domain vs bicubic), on a noisy image
  for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
    assert gap(dy, dx) > 2 * in_place, (dy, dx, gap(dy, dx), in_place)


# --------------------------------------------------------------------------------------------- depth

def test_depth_wrap_is_the_original_uint8_of_255_times_frame():
  rng = np.random.default_rng(0)
  d16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
  np.testing.assert_array_equal(depth.wrap_to_u8(d16), np.uint8(255 * d16))
  d32 = d16.astype(np.int32)
  np.testing.assert_array_equal(depth.wrap_to_u8(d32), np.uint8(255 * d16))
  with pytest.raises(ValueError, match='integer'):
    depth.wrap_to_u8(d16.astype(np.float32))


def test_depth_roi_centre_of_contours_and_fallback(caplog, monkeypatch):
  monkeypatch.setattr(depth, '_fallbacks', [0])  # the warning is rate-limited per process
  u8 = np.zeros((424, 512), np.uint8)
  u8[100:180, 300:360] = 200   # area 4800
  u8[250:300, 50:110] = 90     # area 3000
  u8[10:14, 10:14] = 255       # too small
  cx, cy = depth.roi_centre(u8)
  # Erode 3x3 shrinks each rectangle by 1, dilate 10x10 (anchor 5) grows it by 5 before and 4 after:
  # x 300..359 -> 297..363 (centre 330), y 100..179 -> 97..183 (140); x 50..109 -> 47..113 (80),
  # y 250..299 -> 247..303 (275). The ROI centre is the minimum in x and in y separately.
  assert (cx, cy) == (80, 140)
  crop = depth.roi_crop(u8)
  assert crop.shape == (240, 320)
  np.testing.assert_array_equal(crop, u8[20:260, 0:320])
  with caplog.at_level(logging.WARNING):
    assert depth.roi_centre(np.zeros((424, 512), np.uint8), 'empty.png') == (256, 212)
  assert 'empty.png' in caplog.text and 'no contour' in caplog.text


def test_depth_colormap_is_opencv_jet_in_bgr_order():
  u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
  jet = depth.colorize(u8)
  np.testing.assert_array_equal(jet, cv2.applyColorMap(u8, cv2.COLORMAP_JET))
  assert jet[0, 0, 0] > jet[0, 0, 2]  # value 0 is blue; blue comes first (BGR) and is kept there


# ------------------------------------------------------------------------------------------- heatmap

def _heatmap_reference(clip_u8, w):
  """The original's per-window loop, written plainly (float64 frames as the original normalises them)."""
  frames = (clip_u8.astype(np.float64) - 127.5) / 128
  t = len(frames)
  dyn, stat = [], []
  for i in range(t):
    window = frames[i:i + w]
    n = len(window)
    re = np.zeros(frames.shape[1:], np.float32)
    for j, f in enumerate(window, start=1):
      re += f * (2 * j - n - 1)
    re = np.maximum(re, 0)
    re -= re.min()
    re = re / re.max() if re.max() != 0 else re / (re.max() + 1e-5)
    grey = (0.2989 * re[..., 0] + 0.587 * re[..., 1] + 0.114 * re[..., 2]).astype(np.float32)
    s = np.where(grey > grey.mean(), grey, 0).astype(np.float32)
    s = cv2.erode(s, cv2.getStructuringElement(cv2.MORPH_RECT, (2, 2)))
    s = cv2.dilate(s, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    s -= s.min()
    s = s / s.max() if s.max() != 0 else s / (s.max() + 1e-5)
    dyn.append(grey)
    stat.append(s)
  zeros = [np.zeros_like(dyn[0])] * (w - 1)
  dyn = np.stack(zeros + dyn)[:t]
  stat = np.stack(zeros + stat)[:t]
  return (dyn + stat) * stat


@pytest.mark.parametrize('t,w,size', [(16, 4, 32), (24, 10, 40), (64, 10, 32), (12, 1, 16), (8, 10, 16)])
def test_heatmap_matches_per_window_loop(t, w, size):
  rng = np.random.default_rng(t * 100 + w)
  base = rng.integers(0, 256, (t, size // 4, size // 4, 3)).astype(np.uint8)
  clip = np.repeat(np.repeat(base, 4, 1), 4, 2)
  clip = np.clip(clip.astype(int) + rng.integers(-20, 21, clip.shape), 0, 255).astype(np.uint8)
  clip[t // 2] = clip[t // 2 - 1]  # a repeated frame, as short videos give
  ours = dynamic_image.heatmap(clip, w)
  ref = _heatmap_reference(clip, w)
  assert ours.shape == (t, size, size) and ours.dtype == np.float32
  if not ref.any():
    assert not ours.any()
  else:
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 1e-3
  assert not ours[:w - 1].any()


def test_heatmap_of_a_still_clip_is_zero():
  clip = np.full((20, 16, 16, 3), 77, np.uint8)
  assert not dynamic_image.heatmap(clip, 10).any()


def test_depth_frame_through_the_whole_transform_in_the_original_order():
  rng = np.random.default_rng(5)
  d16 = np.zeros((424, 512), np.uint16)
  d16[100:300, 150:330] = rng.integers(1500, 2600, (200, 180))
  img = Image.fromarray(d16)
  assert img.mode in transforms.SINGLE_CHANNEL_MODES
  c = _config()
  p = transforms.ClipParams(crop=(20, 4, 244, 228), flip=True, angle=5, blur=False)
  ours = transforms.FrameTransform(c, p)(img, 'depth.png')
  u8 = np.uint8(255 * np.asarray(img))                                   # the original's wrap
  roi = depth.roi_crop(u8)
  jet = cv2.applyColorMap(roi, cv2.COLORMAP_JET)                          # BGR, kept
  h, w = jet.shape[:2]
  rotated = cv2.warpAffine(jet, cv2.getRotationMatrix2D((w / 2, h / 2), 5, 1.0), (w, h))
  ref = Image.fromarray(rotated).resize((320, 240)).crop(p.crop)
  ref = np.asarray(ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((64, 64)))
  np.testing.assert_array_equal(ours, ref)


def test_training_blur_is_drawn_per_frame_and_seeded():
  c = _config(Blur=True)
  params = transforms.clip_params(c, True, np.random.default_rng(0))
  assert params.blur
  img = _image(640, 480, seed=6)
  run = lambda: [transforms.FrameTransform(c, params, np.random.default_rng(1))(img, 'x') for _ in range(1)]
  frames = [transforms.FrameTransform(c, params, rng)(img, 'x')
            for rng in [np.random.default_rng(s) for s in range(12)]]
  plain = transforms.FrameTransform(c, transforms.ClipParams(params.crop, params.flip, params.angle, False))(img, 'x')
  blurred = [not np.array_equal(f, plain) for f in frames]
  assert any(blurred) and not all(blurred)  # probability 0.5 per frame
  np.testing.assert_array_equal(run()[0], run()[0])
  assert not transforms.clip_params(c, False, None).blur  # never at evaluation
