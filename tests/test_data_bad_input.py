"""Bad input fails clearly (the file or line is named), or with dataset.skip_bad_videos is skipped
with a warning and counted; never a silent wrong clip."""

import logging
import os

import numpy as np
from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import dump
from rgbd_jax.data import pipeline
from rgbd_jax.data import splits
from rgbd_jax.data import tfds_builder

N = 20


def make_dataset(root, videos=('A_rgb', 'B_rgb', 'C_rgb')):
  for v, name in enumerate(videos):
    folder = root / 'Images' / name
    os.makedirs(folder)
    for i in range(N):
      Image.new('RGB', (40, 32), (10 * v + i, 50, 90)).save(folder / f'{i + 1:06d}.jpg')
  os.makedirs(root / 'splits')
  (root / 'splits' / 'valid.txt').write_text(''.join(f'{n} {N} {k}\n' for k, n in enumerate(videos)))
  c = configs.base_config()
  c.common.data = str(root)
  c.common.splits = str(root / 'splits')
  c.common.num_workers = 0  # in-process, so that warnings reach caplog
  c.model.sample_duration = 16
  c.model.sample_size = 32
  c.dataset.resize = (40, 32)
  c.dataset.crop_size = 32
  return c


def frame(root, name, i):
  return root / 'Images' / name / f'{i + 1:06d}.jpg'


def test_missing_frame_names_the_file(tmp_path):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'B_rgb', 5))
  loader = clips.ClipLoader(c, 'valid')
  loader(0)
  with pytest.raises(FileNotFoundError, match=r'B_rgb/000006\.jpg'):
    loader(1)


def test_split_claiming_more_frames_than_exist_is_an_error(tmp_path):
  c = make_dataset(tmp_path)
  (tmp_path / 'splits' / 'valid.txt').write_text(f'A_rgb {N + 10} 0\n')
  with pytest.raises(FileNotFoundError, match=r'A_rgb/0000(2[1-9]|30)\.jpg'):
    clips.ClipLoader(c, 'valid')(0)


@pytest.mark.parametrize('content', [b'not an image at all', 'truncated'])
def test_unreadable_frame_names_the_file(tmp_path, content):
  c = make_dataset(tmp_path)
  path = frame(tmp_path, 'C_rgb', 10)  # a sampled frame (20 frames -> 16: index 9 is not read)
  data = path.read_bytes()[:200] if content == 'truncated' else content
  path.write_bytes(data)
  with pytest.raises(ValueError, match=r'C_rgb/000011\.jpg: cannot decode'):
    clips.ClipLoader(c, 'valid')(2)


def test_frame_of_another_size_names_the_file(tmp_path):
  c = make_dataset(tmp_path)
  Image.new('RGB', (48, 32), (1, 2, 3)).save(frame(tmp_path, 'A_rgb', 12))
  with pytest.raises(ValueError, match=r'A_rgb/000013\.jpg: frame is RGB \(48, 32\)'):
    clips.ClipLoader(c, 'valid')(0)


def test_frame_of_an_unsupported_mode_names_the_file(tmp_path):
  c = make_dataset(tmp_path)
  for i in range(N):  # a whole video of RGBA PNGs named .jpg
    Image.new('RGBA', (40, 32), (1, 2, 3, 4)).save(frame(tmp_path, 'B_rgb', i), format='PNG')
  with pytest.raises(ValueError, match=r"B_rgb/0000\d\d\.jpg: unsupported image mode 'RGBA'"):
    clips.ClipLoader(c, 'valid')(1)


def test_mixed_modes_in_a_video_are_an_error(tmp_path):
  c = make_dataset(tmp_path)
  Image.new('L', (40, 32), 9).save(frame(tmp_path, 'A_rgb', 15))
  with pytest.raises(ValueError, match=r'A_rgb/000016\.jpg: frame is L'):
    clips.ClipLoader(c, 'valid')(0)


@pytest.mark.parametrize('line,message', [
    ('A_rgb 20\n', 'expected "name num_frames label"'),
    ('A_rgb twenty 0\n', 'must be integers'),
    ('A_rgb 20 0 extra\n', 'expected "name num_frames label"'),
    ('A_rgb 20 -1\n', 'negative'),
])
def test_malformed_split_line_names_file_and_line(tmp_path, line, message):
  path = tmp_path / 'valid.txt'
  path.write_text('B_rgb 20 1\n\n' + line)
  with pytest.raises(ValueError, match=rf'{path}:3: .*{message}'):
    splits.read_split(str(path))


def test_empty_split_and_missing_split_file(tmp_path):
  c = make_dataset(tmp_path)
  (tmp_path / 'splits' / 'valid.txt').write_text('')
  with pytest.raises(ValueError, match=r'valid\.txt: no video with more than 16 frames \(0 entries'):
    clips.ClipLoader(c, 'valid')
  (tmp_path / 'splits' / 'valid.txt').write_text('A_rgb 16 0\nB_rgb 3 1\n')
  with pytest.raises(ValueError, match=r'\(2 entries'):
    clips.ClipLoader(c, 'valid')
  with pytest.raises(FileNotFoundError, match=r'train\.txt'):
    clips.ClipLoader(c, 'train')


def test_skip_bad_videos_masks_warns_and_counts(tmp_path, caplog):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'B_rgb', 0))
  c.dataset.skip_bad_videos = True
  with caplog.at_level(logging.WARNING):
    batch = next(pipeline.make_loader(c, 'valid', global_batch_size=3, process_index=0, process_count=1))
  np.testing.assert_array_equal(batch['mask'], [True, False, True])
  np.testing.assert_array_equal(batch['index'], [0, -1, 2])
  assert not batch['video'][1].any()
  assert "skipping video 'B_rgb'" in caplog.text and '000001.jpg' in caplog.text
  assert '1 skipped so far' in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    arrays = dump.collect(c, 'valid', progress=False)
  assert list(arrays['name']) == ['A_rgb', 'C_rgb']
  assert '1 of 3 videos skipped' in caplog.text


def test_tfds_build_with_missing_frames(tmp_path):
  c = make_dataset(tmp_path / 'd')
  os.remove(frame(tmp_path / 'd', 'C_rgb', 19))
  with pytest.raises(FileNotFoundError, match=r'entry 2 .*C_rgb/000020\.jpg'):
    tfds_builder.prepare(c, str(tmp_path / 'tfds'), ['valid'])
  c.dataset.skip_bad_videos = True
  tfds_builder.prepare(c, str(tmp_path / 'tfds2'), ['valid'])
  c.common.source = 'tfds'
  c.common.tfds_data_dir = str(tmp_path / 'tfds2')
  loader = clips.ClipLoader(c, 'valid')
  assert [r.name for r in loader.source.records] == ['A_rgb', 'B_rgb']
  with pytest.raises(ValueError, match="no split 'train'"):
    clips.ClipLoader(c, 'train')


def test_unknown_source_and_missing_tfds_build(tmp_path):
  c = make_dataset(tmp_path)
  c.common.source = 'lmdb'
  with pytest.raises(ValueError, match="common.source must be 'folder' or 'tfds'"):
    clips.ClipLoader(c, 'valid')
  c.common.source = 'tfds'
  with pytest.raises(ValueError, match='tfds_data_dir'):
    clips.ClipLoader(c, 'valid')
  c.common.tfds_data_dir = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='no TFDS build'):
    clips.ClipLoader(c, 'valid')


def test_skip_bad_videos_in_training_replaces_the_video(tmp_path, caplog):
  c = make_dataset(tmp_path)
  (tmp_path / 'splits' / 'train.txt').write_text((tmp_path / 'splits' / 'valid.txt').read_text())
  os.remove(frame(tmp_path, 'B_rgb', 0))
  c.dataset.skip_bad_videos = True
  it = pipeline.make_loader(c, 'train', global_batch_size=3, process_index=0, process_count=1, shuffle=False)
  with caplog.at_level(logging.WARNING):
    batch = next(it)
  assert batch['mask'].all()
  np.testing.assert_array_equal(batch['index'], [0, 2, 2])  # B is replaced by the next usable video, C
  np.testing.assert_array_equal(batch['label'], [0, 2, 2])
  assert "skipping video 'B_rgb'" in caplog.text
