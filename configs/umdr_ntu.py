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

configs.umdr_recipe sets the README's ShuffleMix+ (--smprob 0.2 --mixup 0.8 --shufflemix 0.3:
common.smprob, common.mixup, common.shufflemix) and timm's optimiser and schedule (common.opt='sgd':
Nesterov, no weight decay on biases and norms; common.sched='cosine', per epoch, warm-up from
common.warmup_lr=1e-6 over 5 epochs; the fusion --sched step --decay-epochs 10). The fusion mixes
each stream's clip with a draw and targets of its own, as train_fusion.py.
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/NTU-RGBD/'
  c.common.splits = '/path/to/NTU-RGBD/dataset_splits/@CS'
  c.common.dataset = 'NTU'
  c.model.num_classes = 60
  # config/NTU.yml
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 224
  return configs.umdr_recipe(c, arg, 'configs/umdr_ntu.py')
