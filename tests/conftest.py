"""Shared test helpers: tiny configs, random variable trees, and the golden fixtures as the original saves them.

float64 is never switched on globally here: tests that need it enter
`jax.enable_x64(True)` (crosscheck.precision) for their own duration, so
other tests keep float32.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import pathlib
import zlib

import jax
import ml_collections
import numpy as np
import pytest

from rgbd_jax import configs

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO / 'tests' / 'golden'
# The original's YAML file of each golden fixture -> our config file.
CONFIG_FILES = {'NTU.yml': 'configs/ntu.py', 'NvGesture.yml': 'configs/nvgesture.py'}


def load_config_file(relpath: str, arg=None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file under the repository root."""
  path = REPO / relpath
  spec = importlib.util.spec_from_file_location(f'_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def config_section(config: ml_collections.ConfigDict, key: str) -> str:
  """The section of a YAML key in our config (the original's YAML keys are one flat namespace)."""
  sections = [s for s in ('common', 'model', 'dataset') if key in config[s]]
  if len(sections) != 1:
    raise KeyError(f'key {key!r} found in sections {sections}')
  return sections[0]


def make_tiny_config(network: str = 'I3DWTrans', **model) -> ml_collections.ConfigDict:
  """A small network with every structural feature of the original (FRP, RCM, local block)."""
  c = configs.base_config()
  c.model.Network = network
  c.model.width = 0.125
  c.model.dim = 32
  c.model.heads = 2
  c.model.dim_head = 16
  c.model.mlp_dim = 48
  c.model.N = 2
  c.model.sample_duration = 16
  c.model.num_classes = 5
  c.model.rcm_hidden = 24
  c.dataset.low_frames, c.dataset.media_frames, c.dataset.high_frames = 4, 8, 12
  for k, v in model.items():
    c.model[k] = v
  return c


def make_random_variables(shapes, seed: int = 0):
  """A variable tree shaped like `shapes` (ShapeDtypeStructs) with random values; no compile."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.normal(0.0, 1.0, s.shape).astype(s.dtype), shapes)


# ------------------------------------------------------------------ golden fixtures

class GoldenCase:
  """One golden model fixture: its config, its weights as the original saves them, its inputs."""

  def __init__(self, name: str):
    self.name = name
    self.repo = REPO
    self.golden_path = GOLDEN_DIR / f'{name}.npz'
    self.meta = json.loads((GOLDEN_DIR / f'{name}.json').read_text())
    with np.load(GOLDEN_DIR / f'{name}.npz') as z:
      self.arrays = {k: z[k] for k in z.files}
    self.layout = [(k, tuple(s), d) for k, s, d in self.meta['layout']]
    self.epoch = int(self.meta['overrides'].get('epoch', 0))

  @property
  def fusion(self) -> bool:
    return self.meta['kind'] == 'FusionNet'

  def config(self) -> ml_collections.ConfigDict:
    """Our config file for the fixture's YAML, with the fixture's overrides."""
    config = load_config_file(CONFIG_FILES[self.meta['config_file']])
    for key, value in self.meta['overrides'].items():
      if key == 'epoch':  # not a config key: the run's epoch (sharpness temperature)
        continue
      config[config_section(config, key)][key] = value
    return config

  def state_dict(self) -> collections.OrderedDict:
    """The synthetic weights, regenerated from the layout with the fixtures' recipe."""
    seed = int(self.meta['seed'])
    out = collections.OrderedDict()
    for key, shape, _ in self.layout:
      rng = np.random.default_rng([seed, zlib.crc32(key.encode('utf-8'))])
      if key.endswith('num_batches_tracked'):
        out[key] = np.array(1000, np.int64)
        continue
      if key.endswith('running_var'):
        x = rng.uniform(0.5, 1.5, shape)
      elif key.endswith('running_mean'):
        x = rng.normal(0.0, 0.1, shape)
      elif 'pos_embedding' in key or 'cls_token' in key:
        x = rng.normal(0.0, 1.0, shape)
      elif key.endswith('weight') and len(shape) == 1:
        x = 1.0 + rng.normal(0.0, 0.1, shape)
      elif key.endswith('weight') and len(shape) >= 2:
        x = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
      else:
        x = rng.normal(0.0, 0.02, shape)
      out[key] = x.astype(np.float32)
    return out

  def write_checkpoint(self, path) -> None:
    """`model_best.pth.tar` exactly as the original's training script writes it."""
    import torch  # pylint: disable=g-import-not-at-top
    model = collections.OrderedDict((k, torch.from_numpy(v)) for k, v in self.state_dict().items())
    params = [torch.nn.Parameter(v) for k, v in model.items() if v.is_floating_point()
              and not k.endswith(('running_mean', 'running_var'))]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=3e-4)
    torch.save({'model': model, 'optimizer': optimizer.state_dict(), 'epoch': self.epoch + 1,
                'bestacc': 87.5}, path)

  def inputs(self) -> dict[str, np.ndarray]:
    """The crosscheck inputs (NCTHW float32) decoded from the fixture's uint8 arrays."""
    a = self.arrays
    video = lambda u8: ((u8.astype(np.float32) - 127.5) / 128).astype(np.float32)
    heat = lambda u8: (u8.astype(np.float32) / 64).astype(np.float32)
    if self.fusion:
      return {'rgb': video(a['input/rgb_u8']), 'rgb_heatmap': heat(a['input/rgb_garr_u8']),
              'depth': video(a['input/depth_u8']), 'depth_heatmap': heat(a['input/depth_garr_u8']),
              'target': a['input/target'].astype(np.int64)}
    return {'video': video(a['input/x_u8']), 'heatmap': heat(a['input/garr_u8'])}

  def expected(self) -> dict[str, np.ndarray]:
    return {k[len('expected/'):]: v for k, v in self.arrays.items() if k.startswith('expected/')}


GOLDEN_MODELS = ('dsn_ntu_rgb', 'dsn_nvgesture_depth_seheads2', 'fusion_nvgesture')


@pytest.fixture(scope='session')
def tiny_config():
  """Factory: `tiny_config(network='I3DWTrans', **model_overrides)`."""
  return make_tiny_config


@pytest.fixture(scope='session')
def random_variables():
  """Factory: `random_variables(shapes, seed=0)`."""
  return make_random_variables


@pytest.fixture(scope='session')
def golden_case():
  """Factory: `golden_case(name)` -> GoldenCase (cached)."""
  cache = {}
  def get(name):
    if name not in cache:
      cache[name] = GoldenCase(name)
    return cache[name]
  return get
