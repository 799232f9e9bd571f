"""ChaLearn IsoGD (the original's config/IsoGD.yml): ReduceLROnPlateau, 300 epochs.

    python scripts/train.py --config configs/isogd.py --workdir runs/isogd \
        --config.common.data=/data/IsoGD --config.common.splits=/data/IsoGD/dataset_splits
"""
from rgbd_jax import configs


def get_config(arg=None):
  del arg
  c = configs.base_config()
  c.common.data = '/path/to/IsoGD/Dataset'
  c.common.splits = '/path/to/IsoGD/Dataset/dataset_splits'
  c.common.dataset = 'IsoGD'
  c.common.batch_size = 6
  c.common.test_batch_size = 6
  c.common.num_workers = 6
  c.common.learning_rate = 0.01
  c.common.epochs = 300
  c.common.scheduler.name = 'ReduceLR'
  c.model.w = 10
  c.model.temper = 0.5
  c.dataset.flip = 0.0
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (256, 256)
  c.dataset.crop_size = 224
  return c
