"""Your own dataset in the generic layout (dataset name 'Custom').

    python scripts/extract_frames.py --videos my_videos/ --data data/mine   # my_videos/<class>/<video>.mp4
    python scripts/make_splits.py --data data/mine                          # -> data/mine/dataset_splits
    python scripts/train.py --config configs/custom.py --workdir runs/mine \
        --config.common.data=data/mine --config.model.num_classes=K
    python scripts/predict.py --checkpoint runs/mine new_video.mp4

Frames: <data>/rgb/<name>/%06d.jpg and, for depth models (--config.dataset.type=K) or the fusion
network (--config.model.Network=FusionNet), <data>/depth/<name>/%06d.jpg (8-bit, 3 channels) or
.png (16-bit single-channel depth: the NTU depth path, ROI + JET), numbered from 0. Split files:
<data>/dataset_splits/{train,valid}.txt with `name frames label` lines, and classes.txt (the class
names, which predict.py shows). The network and recipe are the paper's NTU settings (64 frames,
224x224 crops of 320x240 frames); `configs/custom.py:tiny` is a small network for a CPU run
(32x32, 8 frames, minutes), e.g. to check a dataset end to end.
"""
from rgbd_jax import configs


def get_config(arg=None):
  c = configs.base_config()
  c.common.dataset = 'Custom'
  c.common.data = '/path/to/your/dataset'
  # follows common.data: --config.common.data=DIR moves the splits with it
  c.common.splits = c.common.get_ref('data') + '/dataset_splits'
  c.model.num_classes = 10  # the number of classes in classes.txt: --config.model.num_classes=K
  if arg == 'tiny':
    c.common.batch_size = 4
    c.common.test_batch_size = 4
    c.common.epochs = 10
    c.common.report_freq = 1
    c.common.num_workers = 0
    c.common.prefetch = 2
    c.common.optim = 'Adam'
    c.common.learning_rate = 0.001
    c.common.scheduler.warm_up_epochs = 1
    c.common.xla_opt_level = 0
    c.model.width = 0.125
    c.model.dim = 32
    c.model.heads = 2
    c.model.dim_head = 16
    c.model.mlp_dim = 48
    c.model.N = 1
    c.model.rcm_hidden = 16
    c.model.sample_duration = 8
    c.model.sample_size = 32
    c.model.w = 4
    c.model.sharpness = False
    c.dataset.low_frames, c.dataset.media_frames, c.dataset.high_frames = 2, 4, 6
    c.dataset.resize = (48, 40)
    c.dataset.crop_size = 36
  elif arg:
    raise ValueError(f"configs/custom.py: unknown arg {arg!r} (use 'tiny' or nothing)")
  return c
