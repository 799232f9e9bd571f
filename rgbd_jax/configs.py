"""The base configuration and the import of the original's YAML files.

Every setting has its default here, once. Sections and key names follow the
original's YAML files (`common`, `model`, `dataset`) so a user of the original
finds each setting where they expect it; settings the original does not have
get new keys, marked "new" below.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from typing import Any, Callable

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
  c.common.epochs = 100
  c.common.report_freq = 10
  c.common.optim = 'SGD'
  c.common.scheduler = ml_collections.ConfigDict(
      {'name': 'cosin', 'patience': 4, 'warm_up_epochs': 3})
  c.common.loss = ml_collections.ConfigDict({'name': 'CE', 'labelsmooth': True})  # labelsmooth False: plain CE
  c.common.MultiLoss = True
  c.common.loss_lamdb = [1.0, 0.5, 0.5, 0.5]
  c.common.distill = 1.0
  c.common.warmup_epochs = 5         # new (UMDR): --warmup-epochs: DSNV2's distillation weight is 0 while epoch <= this
  # new: run control
  c.common.seed = 123
  c.common.max_steps = -1            # new: stop after this many steps (-1: no limit)
  c.common.source = 'folder'         # new: 'folder' or 'tfds'
  c.common.tfds_data_dir = ''        # new: where prepare_tfds.py wrote the TFDS build
  c.common.prefetch = 2              # new: batches prefetched by the grain pipeline
  c.common.keep_checkpoints = 1      # new: latest checkpoints kept besides the best
  c.common.accumulation_steps = 1    # new: micro-batches per optimiser update (gradient accumulation)
  c.common.checkpoint_every_steps = 500  # new: also checkpoint every this many steps, in the background (0: epoch ends only)
  c.common.label_smoothing = 0.1     # new: eps of the label-smoothing CE (the original hard-codes 0.1; the journal's --smoothing, Mixup's targets too)
  c.common.xla_opt_level = -1        # new: XLA backend optimisation level of the jitted steps (-1: XLA's; 0: fastest compile, short runs)
  # new (UMDR): the journal's train.py optimiser and schedule (timm's create_optimizer / create_scheduler), its argparse names
  c.common.opt = ''                  # new (UMDR): --opt: 'sgd' = timm's SGD (Nesterov; no weight decay on biases and 1-D parameters); '': common.optim
  c.common.sched = ''                # new (UMDR): --sched: 'cosine' or 'step', per epoch, warm-up from warmup_lr over common.warmup_epochs; '': common.scheduler
  c.common.warmup_lr = 1e-6          # new (UMDR): --warmup-lr, where the warm-up starts
  c.common.decay_epochs = 30.0       # new (UMDR): --decay-epochs, 'step': the rate is multiplied by decay_rate every this many epochs
  c.common.decay_rate = 0.1          # new (UMDR): --decay-rate
  # new (UMDR): the journal's Mixup / CutMix / ShuffleMix+ (utils/mixup.py, 'batch' mode), its argparse names and defaults
  c.common.mixup = 0.0               # new (UMDR): --mixup, MixUp's Beta alpha; mixing is on when mixup or cutmix > 0 (the journal's default 0.8)
  c.common.cutmix = 0.0              # new (UMDR): --cutmix, CutMix's Beta alpha
  c.common.cutmix_minmax = ()        # new (UMDR): --cutmix-minmax (min, max) box side ratios; set: CutMix with alpha 1 and boxes from this range
  c.common.mixup_prob = 1.0          # new (UMDR): --mixup-prob, probability that a batch is mixed at all
  c.common.mixup_switch_prob = 0.5   # new (UMDR): --mixup-switch-prob, CutMix instead of MixUp when both are on
  c.common.mixup_mode = 'batch'      # new (UMDR): --mixup-mode; only 'batch' (one draw per batch) is ported
  c.common.shufflemix = 0.2          # new (UMDR): --shufflemix, ShuffleMix's Beta alpha
  c.common.smprob = 0.3              # new (UMDR): --smprob, probability of ShuffleMix instead of MixUp (the paper's rho)
  c.common.smixmode = 'sm'           # new (UMDR): --smixmode; only 'sm' (whole frames from the paired clip) is ported

  # ----------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  c.model.Network = 'I3DWTrans'      # 'I3DWTrans' (unimodal) or 'FusionNet'; the journal's 'DSNV2' or 'UMDRFusion'
  c.model.pretrained = ''
  c.model.sample_duration = 64
  c.model.sample_size = 224
  c.model.grad_clip = 5.0
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
  c.model.remat = False              # new: recompute the stem's activations in the backward pass (less memory, ~1/3 more compute)
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
  # new (UMDR): the journal's networks 'DSNV2' and 'UMDRFusion' (zhoubenjia/MotionRGBD-PAMI), its argparse names
  c.model.intar_fatcer = 2           # new (UMDR): --intar-fatcer: DTNV2 branch j takes (j + 1) * (sample_duration // intar_fatcer) tokens
  c.model.sms_depth = 3              # new (UMDR): SMS stages of DSNNetV2, each with its RCM (the original asserts 3)
  c.model.scc_depth = 2              # new (UMDR fusion): --scc-depth, spatial cross-modal blocks
  c.model.tcc_depth = 4              # new (UMDR fusion): --tcc-depth, temporal cross-modal blocks
  c.model.stream_epoch = -1          # new (UMDR fusion): epoch index of the frozen streams' temperature (-1: common.epochs - 1; the original: stream checkpoint epoch - 1)

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
  c.dataset.packed = False           # new: train from the packed build (prepare_tfds.py --packed: frames at `resize`, JPEG); evaluation unchanged
  c.dataset.skip_bad_videos = False  # new: a video with a missing/unreadable/inconsistent frame is skipped with a warning (else an error)
  c.dataset.verify_frames = 'names'  # new: preflight before training: 'names' (frame files exist), 'full' (also decode), 'off'
  # new: the synthetic RGB-D dataset (rgbd_jax.data.synthetic), used when common.dataset == 'Synthetic'
  c.dataset.synthetic_videos = (2400, 600)   # (train, valid) videos
  c.dataset.synthetic_frames = (24, 40)      # frames per video, drawn from [min, max]
  c.dataset.synthetic_frame_size = (80, 60)  # (width, height) of the RGB and depth frames
  c.dataset.synthetic_seed = 0

  # ----------------------------------------------------------------- inert
  # Keys of the original's YAML files that change nothing in this port (logging to
  # visdom, torch.distributed switches, ...): `from_yaml` and `from_json` put them
  # here, section by section, with a warning, so a file is imported whole and
  # nothing looks as if it had an effect.
  c.inert = ml_collections.ConfigDict()
  return c


def umdr_recipe(c: ml_collections.ConfigDict, arg: str | None, where: str) -> ml_collections.ConfigDict:
  """The journal's (UMDR) training over a dataset's config: train.py's README command line and argparse defaults.

  `arg` 'fusion' is train_fusion.py's (`--distill 0.0`, the two trained streams frozen). The
  dataset's YAML values stay with each `configs/umdr_*.py`.
  """
  c.common.batch_size = 16
  c.common.test_batch_size = 32
  c.common.learning_rate = 0.01
  c.common.learning_rate_min = 0.00001
  c.common.weight_decay = 0.0005
  c.common.epochs = 100
  c.common.opt = 'sgd'                 # timm's: Nesterov, no weight decay on biases and 1-D parameters
  c.common.sched = 'cosine'            # timm's, per epoch; the YAML's `scheduler` is never read by train.py
  c.common.warmup_lr = 1e-6
  c.common.distill = 0.2
  c.common.warmup_epochs = 5           # --warmup-epochs: the lr warm-up and the distillation's
  c.common.mixup = 0.8                 # ShuffleMix+: --smprob 0.2 --mixup 0.8 --shufflemix 0.3
  c.common.shufflemix = 0.3
  c.common.smprob = 0.2
  c.model.temper = 0.6
  c.common.loss.name = 'SoftCE'        # the YAML's: the smoothed (and mixed) one-hot targets' cross entropy
  c.model.Network = 'DSNV2'
  c.model.frp = False
  c.model.sample_duration = 32
  c.model.intar_fatcer = 2
  if arg == 'fusion':
    c.model.Network = 'UMDRFusion'
    c.common.distill = 0.0
    c.common.sched = 'step'            # README: --sched step --decay-epochs 10
    c.common.decay_epochs = 10.0
    # the README's --smprob 0.2 --mixup 0.8 --shufflemix 0.3 (set above) apply: train_fusion.py mixes
    # each stream's clip with a draw and targets of its own (build.NetworkKind.input_losses)
  elif arg:
    raise ValueError(f"{where}: unknown arg {arg!r} (use 'fusion' or nothing)")
  return c


# The networks that read RGB and depth together (one sample holds both streams). The data side
# asks this, not the network description (data knows nothing of models); a test checks it
# against models/build.py's NETWORKS.
RGBD_NETWORKS = frozenset({'FusionNet', 'UMDRFusion'})


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


def label_smoothing(config: ml_collections.ConfigDict) -> float:
  """eps of the cross entropy: `common.label_smoothing`, or 0 with `common.loss.labelsmooth` False."""
  # 'SoftCE' (the journal's YAML files): SoftTargetCrossEntropy on Mixup's smoothed one-hot targets, which
  # without mixing is this same label-smoothing cross entropy (train/mixing.py: the mixed targets' loss)
  if config.common.loss.name not in ('CE', 'SoftCE'):
    raise ValueError(f"common.loss.name must be 'CE' (or the journal's 'SoftCE'), got {config.common.loss.name!r}")
  return float(config.common.label_smoothing) if config.common.loss.labelsmooth else 0.0


SECTIONS = ('common', 'model', 'dataset')
# YAML key -> our key, where one of the original's files spells a setting differently (Jester.yml).
YAML_ALIASES = {'distill_lamdb': 'distill'}


def _parse_tuple(value: Any) -> Any:
  # The YAML files write tuples as strings, e.g. "(-10, 10)".
  if isinstance(value, str) and value.strip().startswith('('):
    try:
      return tuple(ast.literal_eval(value.strip()))
    except (ValueError, SyntaxError):
      return value
  return value


def _coerce(default: Any, value: Any, where: str) -> Any:
  """`value` as the type of our default (YAML writes 5. or 1 freely; JSON has no tuples)."""
  if default is None or value is None:
    return value
  if isinstance(default, bool):
    if isinstance(value, (bool, int)):
      return bool(value)
  elif isinstance(default, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif isinstance(default, int):
    if isinstance(value, (int, bool)):
      return int(value)
  elif isinstance(default, (list, tuple)):
    if isinstance(value, (list, tuple)):
      return type(default)(value)
  elif isinstance(default, str):
    # e.g. `pretrained: False` in a YAML file: no path
    return '' if value is False else str(value)
  else:
    return value
  raise ValueError(f'{where}: expected {type(default).__name__}, got {value!r}')


def _assign(config: ml_collections.ConfigDict, values: dict[str, Any], where: str,
            section_of: Callable[[str, str], str]) -> None:
  """Writes `values` ({section: {key: value}}) onto `config`, one rule for YAML and JSON.

  A key of the base config gets our default's type; a key we do not have goes
  to `config.inert.<section>` with a warning (it would change nothing here).
  `section_of(section, key)` places a key (the original's YAML flattens sections).
  """
  for section, entries in values.items():
    if not isinstance(entries, dict):
      raise ValueError(f'{where}: section {section!r} is not a mapping')
    for key, value in entries.items():
      value = _parse_tuple(value)
      target = section_of(section, key)
      if target in SECTIONS and isinstance(config[target].get(key), str) and isinstance(value, dict):
        # the journal's (UMDR) rgb_checkpoint / depth_checkpoint: one path per --FusionNet (cs16, cs32, ...)
        logging.warning('%s: %s.%s is a mapping (%s) in the file: set the one path with --config.%s.%s=PATH; '
                        'the mapping is kept under inert.%s.%s', where, target, key, ', '.join(map(str, value)),
                        target, key, target, key)
        with config.unlocked():
          if target not in config.inert:
            config.inert[target] = ml_collections.ConfigDict()
          config.inert[target][key] = value
        continue
      if target in SECTIONS and key in config[target]:
        default = config[target][key]
        if isinstance(default, ml_collections.ConfigDict):
          if not isinstance(value, dict):
            raise ValueError(f'{where}: {target}.{key} should be a mapping, got {value!r}')
          for k2, v2 in value.items():
            if k2 not in default:
              raise ValueError(f'{where}: {target}.{key}.{k2} is not a key of this port (known: '
                               f'{sorted(default)})')
            default[k2] = _coerce(default[k2], v2, f'{where}: {target}.{key}.{k2}')
        else:
          config[target][key] = _coerce(default, value, f'{where}: {target}.{key}')
        continue
      home = section if section in SECTIONS else 'common'
      with config.unlocked():
        if home not in config.inert:
          config.inert[home] = ml_collections.ConfigDict()
        config.inert[home][key] = value
      logging.warning('%s: %s.%s has no effect in this port; kept under inert.%s.%s',
                      where, home, key, home, key)


def from_yaml(path: str) -> ml_collections.ConfigDict:
  """Imports an original YAML config file onto the base config.

  A key in a different section than ours is placed where the base config has
  it (the original flattens all sections into one namespace); keys this port
  does not use go to `inert` with a warning, so nothing in the file is lost
  and nothing seems to act that does not.
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
  home = {k: s for s in SECTIONS for k in config[s]}
  raw = {section: {YAML_ALIASES.get(k, k): v for k, v in entries.items()} if isinstance(entries, dict) else entries
         for section, entries in raw.items()}
  _assign(config, raw, path, lambda section, key: home.get(key, section))
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str, where: str = 'config.json') -> ml_collections.ConfigDict:
  """The base config updated with a saved config (`to_json`); unknown keys go to `inert`."""
  try:
    values = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where}: not valid JSON: {e}') from e
  if not isinstance(values, dict):
    raise ValueError(f'{where}: expected a JSON object with sections common/model/dataset')
  config = base_config()
  inert = values.pop('inert', {}) or {}
  _assign(config, values, where, lambda section, key: section)
  with config.unlocked():
    for section, entries in inert.items():
      config.inert[section] = ml_collections.ConfigDict(entries)
  return config
