"""The original's state_dict layout: key order, tensor kinds, and what a checkpoint says about its architecture.

torch orders a state_dict by module registration: a module's own parameters,
then its buffers, then each child in the order `__init__` assigned it. The
walk below follows the original's constructors (DSNNet registers `LinearMap`
before the stem endpoints, the DTN's embeddings before its blocks, the RCM
after the blocks, ...). Widths are not repeated here: they come from the Flax
variables (export) or from the checkpoint (inference).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Iterator, Mapping

import ml_collections
import numpy as np

from rgbd_jax import configs
from rgbd_jax.convert import umdr_layout


@dataclasses.dataclass(frozen=True)
class Entry:
  """One state_dict tensor: its key and how it maps to a Flax leaf.

  kind: 'conv' (weight of a ConvNd; `kernel` holds its spatial kernel size),
  'linear' (weight of an nn.Linear), 'param' (any other parameter: norm
  weights, biases, embeddings, the FRP's Conv1d weight kept as is),
  'stat' (BatchNorm running_mean / running_var), 'count' (num_batches_tracked).
  """
  key: str
  kind: str
  kernel: tuple[int, ...] = ()


STEM_CONVS = (('Conv3d_1a_7x7', (1, 7, 7)), ('Conv3d_2b_1x1', (1, 1, 1)), ('Conv3d_2c_3x3', (1, 3, 3)))
STEM_INCEPTIONS = ('Mixed_3b', 'Mixed_3c', 'Mixed_4b', 'Mixed_4c', 'Mixed_5b', 'Mixed_5c')
BRANCHES = ('small', 'media', 'large')
# The branch frame counts of the config, in branch order.
BRANCH_FRAMES = ('low_frames', 'media_frames', 'high_frames')


def _batch_norm(p: str) -> Iterator[Entry]:
  yield Entry(f'{p}.weight', 'param')
  yield Entry(f'{p}.bias', 'param')
  yield Entry(f'{p}.running_mean', 'stat')
  yield Entry(f'{p}.running_var', 'stat')
  yield Entry(f'{p}.num_batches_tracked', 'count')


def _layer_norm(p: str) -> Iterator[Entry]:
  yield Entry(f'{p}.weight', 'param')
  yield Entry(f'{p}.bias', 'param')


def _linear(p: str, bias: bool = True) -> Iterator[Entry]:
  yield Entry(f'{p}.weight', 'linear')
  if bias:
    yield Entry(f'{p}.bias', 'param')


def _unit3d(p: str, kernel: tuple[int, ...]) -> Iterator[Entry]:
  yield Entry(f'{p}.conv3d.weight', 'conv', kernel)
  yield from _batch_norm(f'{p}.bn')


def _inception(p: str, temporal: bool) -> Iterator[Entry]:
  k = (3, 1, 1) if temporal else (1, 3, 3)
  one = (1, 1, 1)
  for name, kernel in (('b0', one), ('b1a', one), ('b1b', k), ('b2a', one), ('b2b', k), ('b3b', one)):
    yield from _unit3d(f'{p}.{name}', kernel)


def _conv_bn_stack(p: str, convs: tuple[int, ...], bns: tuple[int, ...]) -> Iterator[Entry]:
  """An nn.Sequential of 1x1 Conv2d (no bias) at `convs` indices and BatchNorm2d at `bns`."""
  for i in sorted(convs + bns):
    if i in convs:
      yield Entry(f'{p}.{i}.weight', 'conv', (1, 1))
    else:
      yield from _batch_norm(f'{p}.{i}')


def dtn_entries(p: str, config: ml_collections.ConfigDict, heads: bool) -> Iterator[Entry]:
  for b in BRANCHES:
    yield Entry(f'{p}.pos_embedding_{b}', 'param')
    yield Entry(f'{p}.cls_token_{b}', 'param')
  for i in range(config.model.N):
    blk = f'{p}.multi_scale_transformers.{i}'
    for b in BRANCHES:
      layer = f'{blk}.transformer_enc_{b}.layers.0'
      yield from _layer_norm(f'{layer}.0.norm')
      yield from _linear(f'{layer}.0.fn.to_qkv', bias=False)
      yield from _linear(f'{layer}.0.fn.to_out.0')
      yield from _layer_norm(f'{layer}.1.norm')
      yield from _linear(f'{layer}.1.fn.fc1')
      yield from _linear(f'{layer}.1.fn.fc2')
    if i == 0:  # only the first block does local (temporal inception) modelling
      for b in BRANCHES:
        yield from _inception(f'{blk}.Mixed_{b}', temporal=True)
  if config.model.recoupling:
    yield from _linear(f'{p}.rcm.q', bias=False)
    yield from _linear(f'{p}.rcm.k', bias=False)
    yield from _linear(f'{p}.rcm.project.0', bias=False)
    yield from _linear(f'{p}.rcm.project.2', bias=False)
    yield from _layer_norm(f'{p}.rcm.project.3')
    yield from _linear(f'{p}.rcm.linear')
    if config.model.SEHeads > 1:
      yield from _linear(f'{p}.rcm.mergefc.1', bias=False)
      yield from _layer_norm(f'{p}.rcm.mergefc.2')
  if heads:
    for b in BRANCHES:
      yield from _layer_norm(f'{p}.mlp_head_{b}.0')
      yield from _linear(f'{p}.mlp_head_{b}.1')


def dsn_entries(p: str, config: ml_collections.ConfigDict, heads: bool) -> Iterator[Entry]:
  """DSNNet (unimodal network); `p` is '' or a modality prefix ending in '.'."""
  yield from _layer_norm(f'{p}LinearMap.0')
  yield from _linear(f'{p}LinearMap.1')
  for name, kernel in STEM_CONVS:
    yield from _unit3d(f'{p}{name}', kernel)
  for name in STEM_INCEPTIONS:
    yield from _inception(f'{p}{name}', temporal=False)
  yield from dtn_entries(f'{p}dtn', config, heads)
  if config.model.frp:
    yield Entry(f'{p}frp_module.rpconv1d.weight', 'param')


def fusion_entries(config: ml_collections.ConfigDict) -> Iterator[Entry]:
  """CrossFusionNet."""
  yield from _conv_bn_stack('fusion_model.encoder.enconv', (0, 3, 6, 9), (1, 4, 7))
  yield from _conv_bn_stack('fusion_model.decoder.deconv', (0, 3), (1, 4))
  yield Entry('fusion_model.efc.weight', 'conv', (1, 1))
  yield Entry('fc.weight', 'conv', (1, 1))
  yield from dsn_entries('Modalit_rgb.', config, heads=False)
  yield from dsn_entries('Modalit_depth.', config, heads=False)
  yield from _conv_bn_stack('crossFusion', (0, 3), (1,))
  yield from _conv_bn_stack('crossFusionT', (0, 3), (1,))
  for c in ('classifier1', 'classifier2'):
    yield from _layer_norm(f'{c}.0')
    yield from _linear(f'{c}.1')


def original_entries(config: ml_collections.ConfigDict) -> list[Entry]:
  """Every state_dict entry of the original network for `config`, in the original's order."""
  entries = _ENTRIES.get(config.model.Network)
  if entries is None:
    raise ValueError(f'model.Network={config.model.Network!r}: no PyTorch layout (known: {sorted(_ENTRIES)})')
  return list(entries(config))


# model.Network -> its state_dict entries (the original's checkpoint format of each kind)
_ENTRIES = {'I3DWTrans': lambda config: dsn_entries('', config, heads=True), 'FusionNet': fusion_entries}
# the journal's (UMDR) networks: umdr_layout gives (key, kind, kernel) triples
_ENTRIES.update({name: (lambda config, f=f: (Entry(*t) for t in f(config)))
                 for name, f in umdr_layout.ENTRIES.items()})


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops DataParallel's `module.` key prefix where present (as the original's loader does)."""
  return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}


# ----------------------------------------------------------------- inference

def _shape(sd: Mapping[str, np.ndarray], key: str, where: str) -> tuple[int, ...]:
  if key not in sd:
    raise ValueError(f'{where}: checkpoint has no tensor {key!r}, which every original {where} has')
  return tuple(np.shape(sd[key]))


def _infer_dsn(sd: Mapping[str, np.ndarray], p: str) -> dict[str, object]:
  """Structural settings of one DSNNet whose keys start with `p`."""
  where = f'network {p[:-1]}' if p else 'network'
  found: dict[str, object] = {}
  dim = _shape(sd, f'{p}LinearMap.1.weight', where)[0]
  found['model.dim'] = dim
  stem = _shape(sd, f'{p}Conv3d_1a_7x7.conv3d.weight', where)[0]
  found['model.width'] = stem / 64.0
  blocks = {int(m.group(1)) for k in sd
            if (m := re.match(re.escape(p) + r'dtn\.multi_scale_transformers\.(\d+)\.', k))}
  if not blocks:
    raise ValueError(f'{where}: checkpoint has no dtn.multi_scale_transformers blocks')
  found['model.N'] = max(blocks) + 1
  layer = f'{p}dtn.multi_scale_transformers.0.transformer_enc_small.layers.0'
  found['model.mlp_dim'] = _shape(sd, f'{layer}.1.fn.fc1.weight', where)[0]
  found['inner_dim'] = _shape(sd, f'{layer}.0.fn.to_qkv.weight', where)[0] // 3
  for branch, frames in zip(BRANCHES, BRANCH_FRAMES):
    found[f'dataset.{frames}'] = _shape(sd, f'{p}dtn.pos_embedding_{branch}', where)[1] - 1
  found['model.frp'] = f'{p}frp_module.rpconv1d.weight' in sd
  found['model.recoupling'] = any(k.startswith(f'{p}dtn.rcm.') for k in sd)
  if found['model.recoupling']:
    q = _shape(sd, f'{p}dtn.rcm.q.weight', where)
    found['model.sample_duration'] = q[1]  # the RCM's Linear layers act on the time axis
    found['model.rcm_hidden'] = _shape(sd, f'{p}dtn.rcm.project.0.weight', where)[0]
    merge = f'{p}dtn.rcm.mergefc.1.weight'
    found['model.SEHeads'] = _shape(sd, merge, where)[1] // dim if merge in sd else 1
  heads = f'{p}dtn.mlp_head_small.1.weight'
  if heads in sd:
    found['model.num_classes'] = sd[heads].shape[0]
  return found


def infer_architecture(state_dict: Mapping[str, np.ndarray]) -> dict[str, object]:
  """What a (prefix-stripped) state_dict fixes about the network, as 'section.key' -> value.

  'inner_dim' (heads * dim_head of the Transformer attention) is reported
  as is: the split into heads and head width is not in the weights. A
  checkpoint that fits no known network is an error saying what it looks
  like and which keys are missing or unexpected.
  """
  try:
    if umdr_layout.looks_like(state_dict):
      return umdr_layout.infer_architecture(state_dict)
    return _infer_conference(state_dict)
  except ValueError as e:
    if umdr_layout.looks_like(state_dict) == 'UMDRFusion-only':
      raise
    raise ValueError(f'{e}\n{nearest_layout_report(state_dict)}') from None


def nearest_layout_report(state_dict: Mapping[str, np.ndarray]) -> str:
  """What a state_dict looks like, and its missing/unexpected keys against that network's layout."""
  network, what = umdr_layout.resemblance(state_dict)
  if network is None:
    return what
  config = configs.base_config()
  config.model.Network = network
  expected = [e.key for e in original_entries(config)]
  return f'{what}: {umdr_layout.key_report(state_dict, expected)}'


def _infer_conference(state_dict: Mapping[str, np.ndarray]) -> dict[str, object]:
  if any(k.startswith('Modalit_rgb.') for k in state_dict):
    rgb = _infer_dsn(state_dict, 'Modalit_rgb.')
    depth = _infer_dsn(state_dict, 'Modalit_depth.')
    differ = {k: (v, depth[k]) for k, v in rgb.items() if depth.get(k) != v}
    if differ:
      raise ValueError(
          'the two modalities of the fusion checkpoint differ in structure (rgb, depth): '
          f'{differ}; one config describes both')
    found = dict(rgb)
    found['model.Network'] = 'FusionNet'
    found['model.num_classes'] = _shape(state_dict, 'classifier1.1.weight', 'FusionNet')[0]
  else:
    found = _infer_dsn(state_dict, '')
    found['model.Network'] = 'I3DWTrans'
    if 'model.num_classes' not in found:
      raise ValueError('checkpoint has neither dtn.mlp_head_small.1.weight (unimodal) nor '
                       'Modalit_rgb.* (fusion) tensors: not a checkpoint of the original network')
  return found


def _current(config: ml_collections.ConfigDict, name: str) -> object:
  """The config's effective value for an inferred setting."""
  if name == 'model.num_classes':
    return configs.num_classes(config)
  if name == 'model.rcm_hidden':
    return configs.rcm_hidden(config)
  if name == 'model.width':
    return int(round(64 * config.model.width)) / 64.0
  section, key = name.split('.')
  return config[section][key]


def apply_architecture(config: ml_collections.ConfigDict, found: Mapping[str, object]
                       ) -> ml_collections.ConfigDict:
  """A copy of `config` with the checkpoint's structural values, one log line per change."""
  config = config.copy_and_resolve_references()
  for name, value in found.items():
    if name == 'inner_dim':
      continue
    if name in ('model.rcm_hidden', 'model.sample_duration', 'model.SEHeads') and not found.get('model.recoupling', True):
      continue
    old = _current(config, name)
    if old != value:
      logging.warning('checkpoint overrides %s: %s -> %s', name, old, value)
      section, key = name.split('.')
      config[section][key] = value
  inner = found['inner_dim']
  if config.model.heads * config.model.dim_head != inner:
    if inner % config.model.dim_head:
      raise ValueError(
          f'checkpoint attention width heads*dim_head={inner} is not a multiple of '
          f'model.dim_head={config.model.dim_head}; set model.dim_head')
    heads = inner // config.model.dim_head
    logging.warning('checkpoint overrides model.heads: %s -> %s', config.model.heads, heads)
    config.model.heads = heads
  return config
