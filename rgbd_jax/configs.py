"""The base configuration and the import of the original's YAML files.

Every setting has its default here, once. Sections and key names follow the
original's YAML files (`common`, `model`, `dataset`) so a user of the original
finds each setting where they expect it; settings the original does not have
get new keys, marked "new" below.
"""

from __future__ import annotations

import ast
import logging
import os
from typing import Any

import ml_collections
import yaml

# Classes per dataset name, as the original's model builder assigns them.
NUM_CLASSES = {
    'IsoGD': 249,
    'NvGesture': 25,
    'Jester': 27,
    'THUREAD': 40,
    'NTU': 60,
    'Synthetic': 6,
}


def base_config() -> ml_collections.ConfigDict:
  """The defaults (the original's NTU.yml values where it has one)."""
  c = ml_collections.ConfigDict()

  # ---------------------------------------------------------------- common
  c.common = ml_collections.ConfigDict()
  c.common.data = ''
  c.common.splits = ''
  c.common.dataset = 'NTU'
  c.common.batch_size = 4            # per device, as in the original
  c.common.test_batch_size = 6       # per device
  c.common.num_workers = 10
  c.common.learning_rate = 0.005
  c.common.learning_rate_min = 0.00001
  c.common.momentum = 0.9
  c.common.weight_decay = 0.0003
  c.common.init_epochs = 0
  c.common.epochs = 100
  c.common.report_freq = 10
  c.common.optim = 'SGD'
  c.common.dist = True
  c.common.vis_feature = True
  c.common.DEBUG = False
  c.common.visdom = ml_collections.ConfigDict({'enable': False, 'visname': ''})
  c.common.scheduler = ml_collections.ConfigDict(
      {'name': 'cosin', 'patience': 4, 'warm_up_epochs': 3})
  c.common.loss = ml_collections.ConfigDict({'name': 'CE', 'labelsmooth': True})
  c.common.MultiLoss = True
  c.common.loss_lamdb = [1.0, 0.5, 0.5, 0.5]
  c.common.distill = 1.0
  c.common.resume_scheduler = 0
  # new: run control
  c.common.seed = 123
  c.common.max_steps = -1            # new: stop after this many steps (-1: no limit)
  c.common.source = 'folder'         # new: 'folder' or 'tfds'
  c.common.tfds_data_dir = ''        # new: where prepare_tfds.py wrote the TFDS build
  c.common.prefetch = 2              # new: batches prefetched by the grain pipeline
  c.common.keep_checkpoints = 1      # new: latest checkpoints kept besides the best
  c.common.label_smoothing = 0.1     # new: eps of the label-smoothing CE (the original hard-codes 0.1)
  c.common.mse_weight = 1.0          # new: weight of the fusion MSE loss (Jester.yml names it)
  c.common.xla_opt_level = -1        # new: XLA backend optimisation level of the jitted steps (-1: XLA's; 0: fastest compile, short runs)

  # ----------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  c.model.Network = 'I3DWTrans'      # 'I3DWTrans' (unimodal) or 'FusionNet'
  c.model.pretrained = ''
  c.model.resumelr = ''
  c.model.sample_duration = 64
  c.model.sample_size = 224
  c.model.grad_clip = 5.0
  c.model.SYNC_BN = 1
  c.model.w = 10
  c.model.temper = 0.5
  c.model.recoupling = True
  c.model.knn_attention = 0.7
  c.model.sharpness = True
  c.model.temp = [0.04, 0.07]
  c.model.frp = True
  c.model.SEHeads = 1
  c.model.N = 6
  c.model.rgb_checkpoint = ''
  c.model.depth_checkpoint = ''
  # new: values the original hard-codes; tests and the synthetic demo shrink them
  c.model.num_classes = -1           # -1: from NUM_CLASSES[common.dataset]
  c.model.dtype = 'float32'          # compute dtype; parameters stay float32
  c.model.width = 1.0                # multiplier on every stem / inception width
  c.model.dim = 512                  # token width of the DTN
  c.model.heads = 8                  # attention heads per Transformer layer
  c.model.dim_head = 64
  c.model.mlp_dim = 768
  c.model.rcm_hidden = -1            # -1: 128 if common.dataset == 'THU' else 256 (the original's rule)
  c.model.dropout = 0.1              # Transformer dropout
  c.model.rcm_dropout = 0.4
  c.model.fusion_dropout = 0.4       # after the 1x1 interaction stacks
  c.model.bce_dropout = 0.5          # before the modality discriminator `fc`
  c.model.frame_sampling = 'random'  # new: DTN frame choice in training: 'random' (original) or 'centre' (parity)

  # --------------------------------------------------------------- dataset
  c.dataset = ml_collections.ConfigDict()
  c.dataset.type = 'M'               # M: rgb, K: depth
  c.dataset.flip = 0.5
  c.dataset.rotated = 0.5
  c.dataset.angle = (-10, 10)
  c.dataset.Blur = False
  c.dataset.resize = (320, 240)
  c.dataset.crop_size = 224
  c.dataset.low_frames = 16
  c.dataset.media_frames = 32
  c.dataset.high_frames = 48
  c.dataset.fast_decode = False      # new: JPEG DCT-domain downscaling (Image.draft): faster, close to but not the original's pixels
  c.dataset.skip_bad_videos = False  # new: a video with a missing/unreadable/inconsistent frame is skipped with a warning (else an error)
  c.dataset.verify_frames = 'names'  # new: preflight before training: 'names' (frame files exist), 'full' (also decode), 'off'
  # new: the synthetic RGB-D dataset (rgbd_jax.data.synthetic), used when common.dataset == 'Synthetic'
  c.dataset.synthetic_videos = (2400, 600)   # (train, valid) videos
  c.dataset.synthetic_frames = (24, 40)      # frames per video, drawn from [min, max]
  c.dataset.synthetic_frame_size = (80, 60)  # (width, height) of the RGB and depth frames
  c.dataset.synthetic_seed = 0
  return c


def num_classes(config: ml_collections.ConfigDict) -> int:
  """Classes of the model: `model.num_classes`, else from the dataset name."""
  if config.model.num_classes > 0:
    return int(config.model.num_classes)
  name = config.common.dataset
  if name not in NUM_CLASSES:
    raise ValueError(
        f'common.dataset={name!r} has no known class count; set model.num_classes '
        f'(known datasets: {sorted(NUM_CLASSES)})')
  return NUM_CLASSES[name]


def rcm_hidden(config: ml_collections.ConfigDict) -> int:
  """RCM hidden width: the original uses 128 only for a dataset named exactly 'THU'."""
  if config.model.rcm_hidden > 0:
    return int(config.model.rcm_hidden)
  return 128 if config.common.dataset == 'THU' else 256


def _parse_tuple(value: Any) -> Any:
  # The YAML files write tuples as strings, e.g. "(-10, 10)".
  if isinstance(value, str) and value.strip().startswith('('):
    try:
      return tuple(ast.literal_eval(value.strip()))
    except (ValueError, SyntaxError):
      return value
  return value


def from_yaml(path: str) -> ml_collections.ConfigDict:
  """Imports an original YAML config file onto the base config.

  Keys the base config does not know are added (and logged), so nothing in the
  file is lost; a YAML key in a different section than ours is placed where the
  base config has it (the original flattens all sections into one namespace).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'config file not found: {path}')
  with open(path) as f:
    try:
      raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise ValueError(f'{path}: not valid YAML: {e}') from e
  if not isinstance(raw, dict):
    raise ValueError(f'{path}: expected sections common/model/dataset at top level')
  config = base_config()
  home = {k: s for s in ('common', 'model', 'dataset') for k in config[s]}
  for section, values in raw.items():
    if not isinstance(values, dict):
      raise ValueError(f'{path}: section {section!r} is not a mapping')
    for key, value in values.items():
      value = _parse_tuple(value)
      target = home.get(key, section if section in ('common', 'model', 'dataset') else 'common')
      with config.unlocked():
        if key not in config[target]:
          logging.info('%s: key %s.%s is not in the base config; kept as is', path, target, key)
        if isinstance(value, dict) and key in config[target]:
          for k2, v2 in value.items():
            config[target][key][k2] = v2
        else:
          if key in config[target] and config[target][key] is not None and value is not None:
            value = _coerce(config[target][key], value, f'{path}: {target}.{key}')
          config[target][key] = value
  return config


def _coerce(default: Any, value: Any, where: str) -> Any:
  """Casts a YAML value to the type of our default (YAML writes 5. or 1 freely)."""
  if isinstance(default, bool):
    return bool(value)
  if isinstance(default, float) and isinstance(value, (int, float)):
    return float(value)
  if isinstance(default, int) and isinstance(value, bool):
    return int(value)
  if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(default)(value)
  if isinstance(default, str) and not isinstance(value, str):
    # e.g. `resumelr: False` or `resumelr: 0.0001`: keep the original's meaning as text.
    return '' if value is False else str(value)
  if type(default) is not type(value) and not (isinstance(default, int) and isinstance(value, int)):
    raise ValueError(f'{where}: expected {type(default).__name__}, got {value!r}')
  return value
