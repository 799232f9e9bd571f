"""Every dataset's folder layout and frame naming, on tiny generated folders.

Each frame is a solid grey JPEG whose level encodes its (0-based) frame index, so a clip shows
which files the loader opened: level 40 + 6 i for RGB, 230 - 5 i for 3-channel depth.
"""

import os

import cv2
import numpy as np
from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import sampling

FRAMES = 20
SIZE = (48, 40)


def rgb_level(i):
  return 40 + 6 * i


def depth_level(i):
  return 230 - 5 * i


def write_frames(folder, name_of, level_of, n=FRAMES):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    img = Image.new('RGB', SIZE, (level_of(i),) * 3)
    img.save(os.path.join(folder, name_of(i)), quality=95)


def write_depth16(folder, n=FRAMES, size=(64, 48)):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    frame = np.full(size[::-1], 1000 + i, np.uint16)
    cv2.imwrite(os.path.join(folder, f'MDepth-{i + 1:08d}.png'), frame)


def write_split(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.writelines(f'{n} {c} {l}\n' for n, c, l in rows)


def make_config(root, dataset, type_='M', network='I3DWTrans'):
  c = configs.base_config()
  c.common.dataset = dataset
  c.common.data = str(root)
  c.common.splits = str(root / 'splits')
  c.dataset.type = type_
  c.model.Network = network
  c.model.sample_duration = 16
  c.model.sample_size = 32
  c.dataset.resize = (64, 64)
  c.dataset.crop_size = 32
  return c


def assert_levels(clip, indices, level_of):
  assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
  expected = np.array([level_of(i) for i in indices], float)
  np.testing.assert_allclose(clip.reshape(16, -1).mean(axis=1), expected, atol=2)


def jet_bgr(u8_value):
  return cv2.applyColorMap(np.full((1, 1), u8_value, np.uint8), cv2.COLORMAP_JET)[0, 0]


def test_ntu_rgb_depth_and_fusion(tmp_path):
  name = 'S001C001P001R001A001_rgb'
  write_frames(tmp_path / 'Images' / name, lambda i: f'{i + 1:06d}.jpg', rgb_level)
  write_depth16(tmp_path / 'nturgb+d_depth_masked' / name[:-4])
  write_split(str(tmp_path / 'splits' / 'valid.txt'), [(name, FRAMES, 7), ('short_rgb', 16, 1)])
  indices = sampling.sample_indices(FRAMES, 16)

  out = clips.ClipLoader(make_config(tmp_path, 'NTU', 'M'), 'valid').load_u8(0)
  assert out['label'] == 7 and out['name'] == name and out['index'] == 0
  assert_levels(out['rgb'], indices, rgb_level)

  depth = clips.ClipLoader(make_config(tmp_path, 'NTU', 'K'), 'valid')
  assert len(depth) == 1  # the 16-frame video is dropped
  out = depth.load_u8(0)
  for t, i in enumerate(indices):  # 16-bit depth: uint8(255 * d) wraps to -d mod 256, then JET (BGR)
    np.testing.assert_array_equal(out['depth'][t, 16, 16], jet_bgr((-(1000 + i)) % 256))

  fusion = clips.ClipLoader(make_config(tmp_path, 'NTU', 'M', 'FusionNet'), 'valid')
  sample = fusion(0)
  assert {'rgb', 'depth', 'label', 'mask', 'index'} == set(sample)
  np.testing.assert_array_equal(sample['depth'][3, 16, 16], jet_bgr((-(1000 + indices[3])) % 256))


@pytest.mark.parametrize('type_', ['M', 'K'])
def test_nvgesture_zero_based_and_fixed_eval_crop(tmp_path, type_):
  name = 'class_01/subject1_r0'
  write_frames(tmp_path / 'rgb' / name, lambda i: f'{i:06d}.jpg', rgb_level)
  write_frames(tmp_path / 'depth' / name, lambda i: f'{i:06d}.jpg', depth_level)
  write_split(str(tmp_path / 'splits' / 'valid.txt'), [(name, FRAMES, 3)])
  loader = clips.ClipLoader(make_config(tmp_path, 'NvGesture', type_), 'valid')
  out = loader.load_u8(0)
  stream = {'M': 'rgb', 'K': 'depth'}[type_]
  assert_levels(out[stream], sampling.sample_indices(FRAMES, 16), {'M': rgb_level, 'K': depth_level}[type_])


def test_nvgesture_fusion_reads_depth_by_replacing_rgb(tmp_path):
  root = tmp_path / 'nv'
  name = 'class_02/subject3_r1'
  write_frames(root / 'rgb' / name, lambda i: f'{i:06d}.jpg', rgb_level)
  write_frames(root / 'depth' / name, lambda i: f'{i:06d}.jpg', depth_level)
  write_split(str(root / 'splits' / 'valid.txt'), [(name, FRAMES, 3)])
  out = clips.ClipLoader(make_config(root, 'NvGesture', 'M', 'FusionNet'), 'valid').load_u8(0)
  indices = sampling.sample_indices(FRAMES, 16)
  assert_levels(out['rgb'], indices, rgb_level)
  assert_levels(out['depth'], indices, depth_level)


def test_isogd_depth_names_replace_m_by_k(tmp_path):
  root = tmp_path / 'iso'
  write_frames(root / 'rgb' / 'train' / '001' / 'M_00001', lambda i: f'{i:06d}.jpg', rgb_level)
  write_frames(root / 'depth' / 'train' / '001' / 'K_00001', lambda i: f'{i:06d}.jpg', depth_level)
  write_split(str(root / 'splits' / 'valid.txt'), [('train/001/M_00001', FRAMES, 0)])
  indices = sampling.sample_indices(FRAMES, 16)
  assert_levels(clips.ClipLoader(make_config(root, 'IsoGD', 'K'), 'valid').load_u8(0)['depth'], indices, depth_level)
  out = clips.ClipLoader(make_config(root, 'IsoGD', 'M', 'FusionNet'), 'valid').load_u8(0)
  assert_levels(out['rgb'], indices, rgb_level)
  assert_levels(out['depth'], indices, depth_level)


def test_thu_read_depth_list_and_fusion_path_rule(tmp_path):
  root = tmp_path / 'thu'
  write_frames(root / 'RGB' / 'cut' / 'sub1' / 'RGB_1', lambda i: f'{i:06d}.jpg', rgb_level)
  write_frames(root / 'Depth' / 'cut' / 'sub1' / 'D_1', lambda i: f'{i:06d}.jpg', depth_level)
  write_split(str(root / 'splits' / 'valid.txt'), [('RGB/cut/sub1/RGB_1', FRAMES, 5)])
  write_split(str(root / 'splits' / 'depth_valid_lst.txt'), [('Depth/cut/sub1/D_1', FRAMES, 5)])
  indices = sampling.sample_indices(FRAMES, 16)
  assert_levels(clips.ClipLoader(make_config(root, 'THUREAD', 'M'), 'valid').load_u8(0)['rgb'], indices, rgb_level)
  # unimodal depth reads depth_valid_lst.txt, whose names are the depth folders
  assert_levels(clips.ClipLoader(make_config(root, 'THUREAD', 'K'), 'valid').load_u8(0)['depth'], indices, depth_level)
  # fusion: RGB -> Depth in the path, then Depth -> D in the last component
  out = clips.ClipLoader(make_config(root, 'THUREAD', 'M', 'FusionNet'), 'valid').load_u8(0)
  assert_levels(out['depth'], indices, depth_level)


def test_jester_five_digit_one_based(tmp_path):
  write_frames(tmp_path / '12345', lambda i: f'{i + 1:05d}.jpg', rgb_level)
  write_split(str(tmp_path / 'splits' / 'valid.txt'), [('12345', FRAMES, 26)])
  out = clips.ClipLoader(make_config(tmp_path, 'Jester', 'M'), 'valid').load_u8(0)
  assert_levels(out['rgb'], sampling.sample_indices(FRAMES, 16), rgb_level)
  assert out['label'] == 26
  with pytest.raises(ValueError, match='Jester has no depth'):
    clips.ClipLoader(make_config(tmp_path, 'Jester', 'M', 'FusionNet'), 'valid')


def test_synthetic_uses_the_ntu_layout(tmp_path):
  name = 'synv000000_rgb'
  write_frames(tmp_path / 'Images' / name, lambda i: f'{i + 1:06d}.jpg', rgb_level)
  write_split(str(tmp_path / 'splits' / 'valid.txt'), [(name, FRAMES, 2)])
  out = clips.ClipLoader(make_config(tmp_path, 'Synthetic', 'M'), 'valid').load_u8(0)
  assert_levels(out['rgb'], sampling.sample_indices(FRAMES, 16), rgb_level)


def test_unknown_dataset_and_type_are_errors(tmp_path):
  write_split(str(tmp_path / 'splits' / 'valid.txt'), [('a', FRAMES, 0)])
  with pytest.raises(ValueError, match='UCF'):
    clips.ClipLoader(make_config(tmp_path, 'UCF'), 'valid')
  with pytest.raises(ValueError, match='dataset.type'):
    clips.ClipLoader(make_config(tmp_path, 'NTU', 'F'), 'valid')
