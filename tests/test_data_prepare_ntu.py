"""scripts/prepare_ntu.py on a tiny raw NTU-RGBD tree (an .avi written with cv2.VideoWriter + masks)."""

import io
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image
import pytest

from rgbd_jax.data import ntu_prepare
from rgbd_jax.data import splits

W, H, FRAMES = 320, 180, 6
MASK = (128, 106)  # (w, h)


def write_raw(root, name, frames, blob):
  """A video with moving texture, and per-frame 16-bit masks with a 2000 mm blob (or none)."""
  os.makedirs(root / 'nturgb+d_rgb', exist_ok=True)
  rng = np.random.default_rng(len(name))
  writer = cv2.VideoWriter(str(root / 'nturgb+d_rgb' / f'{name}.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (W, H))
  assert writer.isOpened()
  base = cv2.resize(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
  for k in range(frames):
    writer.write(np.roll(base, 3 * k, axis=1))
  writer.release()
  folder = root / 'nturgb+d_depth_masked' / name[:-4]
  os.makedirs(folder, exist_ok=True)
  for k in range(1, frames + 1):
    mask = np.zeros(MASK[::-1], np.uint16)
    if blob(k):
      mask[40:80, 70:100] = 2000
    cv2.imwrite(str(folder / f'MDepth-{k:08d}.png'), mask)


def decoded_frames(path):
  cap = cv2.VideoCapture(str(path))
  out = []
  while True:
    ok, frame = cap.read()
    if not ok:
      return out
    out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


A = 'S001C001P001R001A003_rgb'   # performer 1 (cross-subject train), camera 1 (cross-view valid), action 3
B = 'S002C002P003R001A010_rgb'   # performer 3 (cross-subject valid), camera 2 (cross-view train), action 10


@pytest.fixture
def raw(tmp_path):
  write_raw(tmp_path, A, FRAMES, lambda k: True)
  write_raw(tmp_path, B, FRAMES, lambda k: k != 3)  # frame 3: no subject in the mask
  return tmp_path


def test_subject_window_as_the_original_computes_it():
  # Mask blob x 70..99, y 40..79 (read as 8-bit: 2000 >> 8 = 7, times 255 wraps to 249, non-zero);
  # erode 3x3 -> x 71..98, y 41..78; dilate 10x10 (anchor 5: 4 before, 5 after) -> x 67..103, y 37..83;
  # centre (85, 60); scaled to 320x180: (int(2.5 * 85), int(180 / 106 * 60)) = (212, 101);
  # a 160x90 window with its top-left 80, 45 before that point.
  assert ntu_prepare.crop_window((W, H), (85, 60), MASK) == (132, 56, 292, 146)
  assert ntu_prepare.crop_window((W, H), None, MASK) == (80, 45, 240, 135)
  assert ntu_prepare.crop_window((W, H), (2, 100), MASK) == (0, 124, 160, 180)  # clamped to the frame


def test_prepare_writes_cropped_frames_and_splits(raw, caplog):
  centre = ntu_prepare.subject_centre(str(raw / 'nturgb+d_depth_masked' / A[:-4] / 'MDepth-00000001.png'))
  assert centre == (85, 60, MASK)
  with caplog.at_level(logging.WARNING):
    summary = ntu_prepare.prepare(str(raw), workers=1, progress=False)
  assert summary['videos'] == 2 and summary['skipped'] == 0
  assert f'{B}: 1 of {FRAMES} frames had no contour' in caplog.text

  for name, boxes in ((A, [(132, 56, 292, 146)] * FRAMES),
                      (B, [(80, 45, 240, 135) if k == 3 else (132, 56, 292, 146) for k in range(1, FRAMES + 1)])):
    video = decoded_frames(raw / 'nturgb+d_rgb' / f'{name}.avi')
    files = sorted(os.listdir(raw / 'Images' / name))
    assert files == [f'{k:06d}.jpg' for k in range(1, FRAMES + 1)]
    for k, (left, top, right, bottom) in enumerate(boxes):
      out = np.asarray(Image.open(raw / 'Images' / name / files[k])).astype(int)
      assert out.shape == (90, 160, 3)
      # the crop of the decoded frame, saved as the original saves it (Pillow JPEG, default quality)
      buf = io.BytesIO()
      Image.fromarray(video[k][top:bottom, left:right]).save(buf, 'JPEG')
      np.testing.assert_array_equal(out, np.asarray(Image.open(buf)))

  read = lambda p, ph: [(r.name, r.frames, r.label) for r in splits.read_split(str(raw / 'dataset_splits' / p / f'{ph}.txt'))]
  assert read('@CS', 'train') == [(A, FRAMES, 2)] and read('@CS', 'valid') == [(B, FRAMES, 9)]
  assert read('@CV', 'train') == [(B, FRAMES, 9)] and read('@CV', 'valid') == [(A, FRAMES, 2)]


def test_prepare_is_resumable_and_parallel(raw):
  os.makedirs(raw / 'Images' / f'{A}.tmp-999')  # debris of an interrupted run
  ntu_prepare.prepare(str(raw), workers=1, progress=False, limit=1)
  first = raw / 'Images' / A / '000001.jpg'
  stamp = os.stat(first).st_mtime_ns
  result = subprocess.run([sys.executable, 'scripts/prepare_ntu.py', '--data-root', str(raw), '--workers', '2'],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '2 videos prepared' in result.stdout
  assert os.stat(first).st_mtime_ns == stamp  # finished videos are not redone
  assert len(os.listdir(raw / 'Images' / B)) == FRAMES
  assert not [p for p in os.listdir(raw / 'Images') if '.tmp-' in p and not p.endswith('999')]


def test_missing_mask_is_an_error_or_skipped(raw):
  os.remove(raw / 'nturgb+d_depth_masked' / B[:-4] / 'MDepth-00000004.png')
  with pytest.raises(FileNotFoundError, match='MDepth-00000004.png'):
    ntu_prepare.prepare(str(raw), workers=1, progress=False)
  summary = ntu_prepare.prepare(str(raw), workers=1, progress=False, skip_bad=True)
  assert summary['videos'] == 1 and summary['skipped'] == 1
  assert not os.path.exists(raw / 'Images' / B)


def test_bad_names():
  with pytest.raises(ValueError, match='not an NTU-RGBD video name'):
    ntu_prepare.parse_name('holiday_rgb')
  assert ntu_prepare.parse_name('S017C003P020R002A060_rgb') == (59, 3, 20)
