"""NTU-RGBD (the original's config/NTU.yml).

    python scripts/train.py --config configs/ntu.py --workdir runs/ntu \
        --config.common.data=/data/NTU-RGBD --config.common.splits=/data/NTU-RGBD/dataset_splits/@CS
"""
from rgbd_jax import configs


def get_config(arg=None):
  del arg
  c = configs.base_config()
  c.common.data = '/path/to/NTU-RGBD/'
  c.common.splits = '/path/to/NTU-RGBD/dataset_splits/@CS'
  c.common.dataset = 'NTU'
  c.common.batch_size = 4
  c.common.test_batch_size = 6
  c.common.num_workers = 10
  c.common.learning_rate = 0.005
  c.model.w = 10
  c.model.temper = 0.5
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 224
  return c
