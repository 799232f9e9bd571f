"""ChaLearn IsoGD with the journal network UMDR (zhoubenjia/MotionRGBD-PAMI, config/IsoGD.yml + README command).

    python scripts/train.py --config configs/umdr_isogd.py --workdir runs/umdr_isogd_m \
        --config.common.data=/data/IsoGD --config.common.splits=/data/IsoGD/dataset_splits/rgb \
        --config.model.pretrained=NTU-RGBD-32-DTNV2-TSM/model_best.pth.tar
    python scripts/train.py --config configs/umdr_isogd.py:fusion --workdir runs/umdr_isogd_rgbd \
        --config.model.rgb_checkpoint=IsoGD-32-DTNV2-M/model_best.pth.tar \
        --config.model.depth_checkpoint=IsoGD-32-DTNV2-K/model_best.pth.tar

IsoGD.yml names ReduceLR, but the journal's train.py builds its schedule with timm from --sched
(cosine in the README command), so this config is cosine (common.sched). --finetune: model.pretrained,
its classification heads left out. Mixing, optimiser and schedule as configs/umdr_ntu.py.
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/IsoGD/Dataset'
  c.common.splits = '/path/to/IsoGD/Dataset/dataset_splits/rgb'
  c.common.dataset = 'IsoGD'
  # config/IsoGD.yml
  c.dataset.flip = 0.0
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.resize = (256, 256)
  c.dataset.crop_size = 224
  return configs.umdr_recipe(c, arg, 'configs/umdr_isogd.py')
