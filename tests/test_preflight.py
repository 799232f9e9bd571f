"""The preflight finds bad labels and bad frame files before training, naming file, line and value."""

import logging
import os

from PIL import Image
import pytest

from rgbd_jax import configs
from rgbd_jax.data import clips
from rgbd_jax.data import preflight
from rgbd_jax.data import splits
from rgbd_jax.data import tfds_builder

N = 20
VIDEOS = ('A_rgb', 'B_rgb', 'C_rgb', 'D_rgb')


def make_dataset(root, videos=VIDEOS, fusion=False):
  """NTU layout, 6 classes, the same entries in train.txt and valid.txt (a comment line first)."""
  for v, name in enumerate(videos):
    os.makedirs(root / 'Images' / name)
    os.makedirs(root / 'nturgb+d_depth_masked' / name[:-4])
    for i in range(N):
      Image.new('RGB', (40, 32), (10 * v + i, 50, 90)).save(root / 'Images' / name / f'{i + 1:06d}.jpg')
      if fusion:
        Image.new('I;16', (40, 32), 1000 + i).save(
            root / 'nturgb+d_depth_masked' / name[:-4] / f'MDepth-{i + 1:08d}.png')
  os.makedirs(root / 'splits')
  text = '# name frames label\n' + ''.join(f'{n} {N} {k}\n' for k, n in enumerate(videos))
  for phase in ('train', 'valid'):
    (root / 'splits' / f'{phase}.txt').write_text(text)
  c = configs.base_config()
  c.common.dataset = 'Synthetic'  # NTU layout, 6 classes
  c.common.data = str(root)
  c.common.splits = str(root / 'splits')
  c.common.num_workers = 0
  c.model.sample_duration = 16
  c.model.sample_size = 32
  c.dataset.resize = (40, 32)
  c.dataset.crop_size = 32
  if fusion:
    c.model.Network = 'FusionNet'
  return c


def frame(root, name, i):
  return root / 'Images' / name / f'{i + 1:06d}.jpg'


def test_clean_dataset_passes(tmp_path):
  c = make_dataset(tmp_path)
  summary = preflight.run(c, progress=False)
  assert set(summary) == {'train', 'valid'}
  assert summary['train']['videos'] == 4 and summary['train']['bad'] == []
  assert summary['train']['check'] == 'names'
  c.dataset.verify_frames = 'full'
  assert preflight.run(c, progress=False)['valid']['check'] == 'full'


def test_split_records_carry_their_line(tmp_path):
  make_dataset(tmp_path)
  records = splits.read_split(str(tmp_path / 'splits' / 'valid.txt'))
  assert [r.line for r in records] == [2, 3, 4, 5]
  assert records[0] == splits.VideoRecord('A_rgb', N, 0, 0)  # the line is not part of equality


def test_label_out_of_range_names_file_line_and_value(tmp_path):
  c = make_dataset(tmp_path)
  path = tmp_path / 'splits' / 'train.txt'
  lines = path.read_text().splitlines()
  lines[3] = f'C_rgb {N} 99'    # entry 2, line 4
  lines[4] = f'D_rgb {N} 6'     # line 5: just past the last class
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError) as e:
    preflight.check_labels(c, 'train')
  text = str(e.value)
  assert str(path) in text and '[0, 6)' in text and '2 of 4 entries' in text
  assert "line 4: label 99 (video 'C_rgb')" in text and "line 5: label 6 (video 'D_rgb')" in text
  assert preflight.check_labels(c, 'valid') == 4
  with pytest.raises(ValueError, match=r'line 4: label 99'):
    preflight.run(c, progress=False)
  c.model.num_classes = 100
  assert preflight.check_labels(c, 'train') == 4


def test_many_bad_labels_are_listed_up_to_a_limit(tmp_path):
  c = make_dataset(tmp_path)
  (tmp_path / 'splits' / 'valid.txt').write_text(''.join(f'A_rgb {N} {7 + k}\n' for k in range(30)))
  with pytest.raises(ValueError, match=r'(?s)line 20: label 26.*and 10 more bad entries') as e:
    preflight.check_labels(c, 'valid')
  assert 'line 21:' not in str(e.value)


def test_missing_frame_not_sampled_first_is_found(tmp_path):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'C_rgb', 9))  # a 20-frame video's 16 evaluation frames skip index 9
  clips.ClipLoader(c, 'valid')(2)        # so the loader does not notice
  with pytest.raises(ValueError) as e:
    preflight.check_frames(c, 'valid', progress=False)
  text = str(e.value)
  assert '1 of 4 videos' in text
  assert f"'C_rgb' ({tmp_path / 'splits' / 'valid.txt'}:4)" in text
  assert 'rgb: 1 of 20 frame files missing (frame 9 first: ' in text and 'C_rgb/000010.jpg' in text
  assert 'skip_bad_videos=True' in text


def test_missing_folder_and_missing_depth_stream(tmp_path):
  c = make_dataset(tmp_path, fusion=True)
  os.remove(tmp_path / 'nturgb+d_depth_masked' / 'B' / f'MDepth-{N:08d}.png')
  os.rename(tmp_path / 'Images' / 'D_rgb', tmp_path / 'Images' / 'D_moved')
  with pytest.raises(ValueError) as e:
    preflight.check_frames(c, 'train', progress=False)
  text = str(e.value)
  assert '2 of 4 videos' in text and 'streams rgb, depth' in text
  assert 'depth: 1 of 20 frame files missing (frame 19 first' in text and 'MDepth-00000020.png' in text
  assert 'rgb: folder not found: ' in text and 'Images/D_rgb' in text


@pytest.mark.parametrize('damage,message', [
    ('corrupt', r'000008\.jpg: cannot decode'),
    ('size', r'000008\.jpg: frame is RGB \(48, 32\), but .*000001\.jpg is RGB \(40, 32\)'),
    ('mode', r"000008\.jpg: unsupported image mode 'RGBA'"),
])
def test_bad_frame_found_only_by_the_full_check(tmp_path, damage, message):
  c = make_dataset(tmp_path)
  path = frame(tmp_path, 'B_rgb', 7)
  if damage == 'corrupt':
    path.write_bytes(path.read_bytes()[:150])
  elif damage == 'size':
    Image.new('RGB', (48, 32)).save(path)
  else:
    Image.new('RGBA', (40, 32)).save(path, format='PNG')
  assert preflight.check_frames(c, 'valid', progress=False) == []  # the names are all there
  with pytest.raises(ValueError, match=message):
    preflight.check_frames(c, 'valid', full=True, progress=False, workers=2)
  c.dataset.verify_frames = 'full'
  with pytest.raises(ValueError, match=r"'B_rgb' \(.*train\.txt:3\)"):
    preflight.run(c, progress=False)


def test_skip_bad_videos_returns_the_bad_list(tmp_path, caplog):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'A_rgb', 3))
  frame(tmp_path, 'D_rgb', 19).write_bytes(b'not a jpeg')
  c.dataset.skip_bad_videos = True
  with caplog.at_level(logging.WARNING):
    bad = preflight.check_frames(c, 'valid', progress=False)
  assert [b.record.name for b in bad] == ['A_rgb']
  assert bad[0].record.row == 0 and bad[0].record.line == 2
  assert '1 of 4 videos' in caplog.text and 'skipped' in caplog.text
  c.dataset.verify_frames = 'full'
  summary = preflight.run(c, phases=('valid',), progress=False)['valid']
  assert [b['name'] for b in summary['bad']] == ['A_rgb', 'D_rgb']
  assert [b['row'] for b in summary['bad']] == [0, 3]
  assert 'cannot decode' in summary['bad'][1]['problem']
  for name in VIDEOS:  # nothing usable left: still an error
    os.remove(frame(tmp_path, name, 5))
  with pytest.raises(ValueError, match='No usable video left'):
    preflight.check_frames(c, 'valid', progress=False)


def test_verify_frames_off_and_unknown(tmp_path):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'A_rgb', 3))
  c.dataset.verify_frames = 'off'
  assert preflight.run(c, progress=False)['train'] == {
      'videos': 4, 'entries': 4, 'bad': [], 'check': 'off', 'seconds': pytest.approx(0, abs=5)}
  c.dataset.verify_frames = 'yes'
  with pytest.raises(ValueError, match=r"dataset\.verify_frames must be one of .*'yes'"):
    preflight.run(c, progress=False)


def test_tfds_source_checks_labels_only(tmp_path, caplog):
  c = make_dataset(tmp_path / 'd')
  tfds_builder.prepare(c, str(tmp_path / 'tfds'), ['valid'])
  c.common.source = 'tfds'
  c.common.tfds_data_dir = str(tmp_path / 'tfds')
  os.remove(frame(tmp_path / 'd', 'A_rgb', 3))  # not read: the build holds the bytes
  with caplog.at_level(logging.INFO):
    summary = preflight.run(c, phases=('valid',), progress=False)
  assert summary['valid']['check'] == 'labels' and summary['valid']['videos'] == 4
  assert 'frames not checked' in caplog.text
  c.model.num_classes = 3
  with pytest.raises(ValueError, match=r"(?s)rgbd_frames.*\[0, 3\).*entry 3: label 3 \(video 'D_rgb'\).*prepare_tfds"):
    preflight.check_labels(c, 'valid')


def test_labels_of_every_phase_come_before_frames(tmp_path):
  c = make_dataset(tmp_path)
  os.remove(frame(tmp_path, 'A_rgb', 3))  # a bad train video ...
  (tmp_path / 'splits' / 'valid.txt').write_text(f'B_rgb {N} 99\n')  # ... and a bad valid label
  with pytest.raises(ValueError, match=r'valid\.txt: 1 of 1 entries .*\n  line 1: label 99'):
    preflight.run(c, progress=False)
