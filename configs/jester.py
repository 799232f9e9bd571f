"""20BN Jester V1 (the original's config/Jester.yml), used for pre-training.

    python scripts/train.py --config configs/jester.py --workdir runs/jester \
        --config.common.data=/data/Jester/20bn-jester-v1 --config.common.splits=/data/Jester/dataset_splits
"""
from rgbd_jax import configs


def get_config(arg=None):
  del arg
  c = configs.base_config()
  c.common.data = '/path/to/Jester/20bn-jester-v1'
  c.common.splits = '/path/to/Jester/dataset_splits'
  c.common.dataset = 'Jester'
  c.common.batch_size = 2
  c.common.test_batch_size = 2
  c.common.num_workers = 4
  c.common.learning_rate = 0.01
  c.common.scheduler.warm_up_epochs = 0
  c.model.w = 10
  c.model.temper = 0.4
  c.model.knn_attention = 0.8
  c.dataset.flip = 0.0
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (256, 256)
  c.dataset.crop_size = 224
  return c
