"""THU-READ with the journal network UMDR (zhoubenjia/MotionRGBD-PAMI, config/THU.yml).

    python scripts/train.py --config configs/umdr_thu_read.py --workdir runs/umdr_thu_m \
        --config.common.data=/data/THU-READ/frames --config.common.splits=/data/THU-READ/dataset_splits/@CS4/rgb
    python scripts/train.py --config configs/umdr_thu_read.py:fusion --workdir runs/umdr_thu_rgbd \
        --config.model.rgb_checkpoint=THU-READ4-32-DTNV2-M/model_best.pth.tar \
        --config.model.depth_checkpoint=THU-READ4-32-DTNV2-K/model_best.pth.tar

Not ported: Mixup / ShuffleMix+; timm's optimiser details (see configs/umdr_ntu.py).
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/THU-READ/frames'
  c.common.splits = '/path/to/THU-READ/dataset_splits/@CS4/rgb'
  c.common.dataset = 'THUREAD'
  # train.py's arguments (README command line, argparse defaults)
  c.common.batch_size = 16
  c.common.test_batch_size = 32
  c.common.learning_rate = 0.01
  c.common.learning_rate_min = 0.00001
  c.common.weight_decay = 0.0005
  c.common.epochs = 100
  c.common.scheduler.warm_up_epochs = 5
  c.common.distill = 0.2
  c.common.warmup_epochs = 5
  c.model.temper = 0.6
  # config/THU.yml
  c.model.Network = 'DSNV2'
  c.model.frp = False
  c.model.sample_duration = 32
  c.model.intar_fatcer = 2
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.8
  c.dataset.angle = (-45, 45)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 200
  if arg == 'fusion':
    c.model.Network = 'UMDRFusion'
    c.common.distill = 0.0
  elif arg:
    raise ValueError(f"configs/umdr_thu_read.py: unknown arg {arg!r} (use 'fusion' or nothing)")
  return c
