"""The shipped class lists: THU-READ's names from the original's split files, IsoGD's placeholders."""

from rgbd_jax import configs
from rgbd_jax.data import class_names

# Lines of the original's THU-READ split file zhoubenjia/MotionRGBD-PAMI
# data/dataset_splits/THU-READ/@CS1/rgb/train.txt: name, frames, label.
SPLIT_LINES = ('RGB_open_laptop_lhh_2 169 2', 'RGB_throw_paperplane_fjw_3 108 23', 'RGB_thumb_tys_2 159 37',
               'RGB_use_mobilephone_tys_3 514 3', 'RGB_tie_shoelaces_gs_2 131 25')


def _config(dataset):
  c = configs.base_config()
  c.common.dataset = dataset
  return c


def test_thu_read_names_are_the_split_files_actions():
  names = class_names.for_config(_config('THUREAD'))
  assert names.known and names.source.endswith('thu_read.txt')
  assert len(names) == configs.num_classes(_config('THUREAD')) and len(set(names.names)) == len(names)
  for line in SPLIT_LINES:
    video, _, label = line.split()
    action = '_'.join(video.split('_')[1:-2])  # RGB_<action>_<subject>_<take>
    assert names[int(label)] == action.replace('_', ' '), line
  assert not any(n.startswith(('action ', 'class ')) for n in names.names)


def test_isogd_stays_numbered():
  names = class_names.for_config(_config('IsoGD'))
  assert not names.known and len(names) == 249
  assert names.names == tuple(f'gesture {i:03d}' for i in range(1, 250))
