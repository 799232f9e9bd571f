"""THU-READ (the original's config/THU.yml; dataset name THUREAD, so the RCM hidden width is 256).

    python scripts/train.py --config configs/thu_read.py --workdir runs/thu \
        --config.common.data=/data/THU-READ/frames --config.common.splits=/data/THU-READ/dataset_splits/@2
"""
from rgbd_jax import configs


def get_config(arg=None):
  del arg
  c = configs.base_config()
  c.common.data = '/path/to/THU-READ/frames'
  c.common.splits = '/path/to/THU-READ/dataset_splits/@2'
  c.common.dataset = 'THUREAD'
  c.common.batch_size = 6
  c.common.test_batch_size = 6
  c.common.num_workers = 6
  c.common.learning_rate = 0.01
  c.model.w = 10
  c.model.temper = 0.5
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.8
  c.dataset.angle = (-45, 45)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 200
  return c
