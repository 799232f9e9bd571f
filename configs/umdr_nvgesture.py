"""NvGesture with the journal network UMDR (zhoubenjia/MotionRGBD-PAMI, config/NvGesture.yml).

    python scripts/train.py --config configs/umdr_nvgesture.py --workdir runs/umdr_nv_m \
        --config.common.data=/data/NvGesture --config.common.splits=/data/NvGesture/dataset_splits/rgb \
        [--config.model.pretrained=NTU-RGBD-32-DTNV2-TSM/model_best.pth.tar]
    python scripts/train.py --config configs/umdr_nvgesture.py:fusion --workdir runs/umdr_nv_rgbd \
        --config.model.rgb_checkpoint=NV-32-DTNV2-M/model_best.pth.tar \
        --config.model.depth_checkpoint=NV-32-DTNV2-K/model_best.pth.tar

The journal pre-trains on Jester (or NTU) and fine-tunes (README; model.pretrained, its classification
heads left out). Mixing, optimiser and schedule as configs/umdr_ntu.py.
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.data = '/path/to/NvGesture/'
  c.common.splits = '/path/to/NvGesture/dataset_splits/rgb'
  c.common.dataset = 'NvGesture'
  # config/NvGesture.yml
  c.dataset.flip = 0.0
  c.dataset.rotated = 0.5
  c.dataset.angle = (-20, 20)
  c.dataset.resize = (256, 256)
  c.dataset.crop_size = 224
  return configs.umdr_recipe(c, arg, 'configs/umdr_nvgesture.py')
