"""NTU-RGBD with the journal network UMDR (zhoubenjia/MotionRGBD-PAMI, config/NTU.yml + its README commands).

Unimodal (DSNV2; README: --batch-size 16 --sample-duration 32 --lr 0.01 --sched cosine --distill 0.2
--intar-fatcer 2 --type M, 8 GPUs):

    python scripts/train.py --config configs/umdr_ntu.py --workdir runs/umdr_ntu_m \
        --config.common.data=/data/NTU-RGBD --config.common.splits=/data/NTU-RGBD/dataset_splits/@CS \
        [--config.dataset.type=K] [--config.model.sample_duration=64 --config.model.intar_fatcer=4]

RGB-D fusion (UMDRFusion; README: --FusionNet cs32 --scc-depth 2 --tcc-depth 4 --type rgbd --distill 0.0;
the two trained streams are frozen):

    python scripts/train.py --config configs/umdr_ntu.py:fusion --workdir runs/umdr_ntu_rgbd \
        --config.model.rgb_checkpoint=NTU-RGBD-32-CS-DTNV2-M/model_best.pth.tar \
        --config.model.depth_checkpoint=NTU-RGBD-32-CS-DTNV2-K/model_best.pth.tar

Not ported: Mixup / ShuffleMix+ (--mixup 0.8 --shufflemix 0.3 --smprob 0.2); timm's optimiser details
(Nesterov SGD, no weight decay on biases and norms) and its per-epoch warm-up from 1e-6 (here the
port's linear warm-up and cosine over the same 5 epochs).
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/NTU-RGBD/'
  c.common.splits = '/path/to/NTU-RGBD/dataset_splits/@CS'
  c.common.dataset = 'NTU'
  c.model.num_classes = 60
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
  # config/NTU.yml
  c.model.Network = 'DSNV2'
  c.model.frp = False
  c.model.sample_duration = 32
  c.model.intar_fatcer = 2
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 224
  if arg == 'fusion':
    c.model.Network = 'UMDRFusion'
    c.common.distill = 0.0
    c.model.scc_depth = 2
    c.model.tcc_depth = 4
  elif arg:
    raise ValueError(f"configs/umdr_ntu.py: unknown arg {arg!r} (use 'fusion' or nothing)")
  return c
