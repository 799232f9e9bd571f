"""THU-READ with the journal network UMDR (zhoubenjia/MotionRGBD-PAMI, config/THU.yml).

    python scripts/train.py --config configs/umdr_thu_read.py --workdir runs/umdr_thu_m \
        --config.common.data=/data/THU-READ/frames --config.common.splits=/data/THU-READ/dataset_splits/@CS4/rgb
    python scripts/train.py --config configs/umdr_thu_read.py:fusion --workdir runs/umdr_thu_rgbd \
        --config.model.rgb_checkpoint=THU-READ4-32-DTNV2-M/model_best.pth.tar \
        --config.model.depth_checkpoint=THU-READ4-32-DTNV2-K/model_best.pth.tar

Mixing, optimiser and schedule as configs/umdr_ntu.py.
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/THU-READ/frames'
  c.common.splits = '/path/to/THU-READ/dataset_splits/@CS4/rgb'
  c.common.dataset = 'THUREAD'
  # config/THU.yml
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.8
  c.dataset.angle = (-45, 45)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 200
  return configs.umdr_recipe(c, arg, 'configs/umdr_thu_read.py')
