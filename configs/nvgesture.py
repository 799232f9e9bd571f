"""NvGesture (the original's config/NvGesture.yml).

    python scripts/train.py --config configs/nvgesture.py --workdir runs/nv \
        --config.common.data=/data/NvGesture --config.common.splits=/data/NvGesture/dataset_splits
"""
from rgbd_jax import configs


def get_config(arg=None):
  del arg
  c = configs.base_config()
  c.common.data = '/path/to/NvGesture/'
  c.common.splits = '/path/to/NvGesture/dataset_splits/'
  c.common.dataset = 'NvGesture'
  c.common.batch_size = 4
  c.common.test_batch_size = 2
  c.common.num_workers = 10
  c.common.learning_rate = 0.01
  c.model.w = 4  # "4 is best for Nv"
  c.model.temper = 0.4
  c.dataset.flip = 0.0
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (256, 256)
  c.dataset.crop_size = 224
  return c
