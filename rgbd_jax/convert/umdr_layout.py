"""The journal's (UMDR) state_dict layouts and what a checkpoint says about its architecture.

`torch_layout` dispatches here for model.Network 'DSNV2' (DSNNetV2, saved by
the journal's train.py) and 'UMDRFusion' (train_fusion.py's CrossFusionNet,
whose checkpoint holds only its own keys, plus the two stream checkpoints
FeatureCapter loads; this port keeps the three in one variable tree, the
streams under `Modalit_rgb.` / `Modalit_depth.`).

Entries are `(key, kind, kernel)` triples with torch_layout.Entry's meaning
(kind: conv, linear, param, stat, count), in the original's registration
order: a module's own parameters, then its children in `__init__` order.
Widths and depths come from the config (export) or from the tensors
(inference); this module imports no other part of the converter.
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import ml_collections
import numpy as np

from rgbd_jax.models.umdr.dsn_v2 import CHANNEL_POOL_AFTER
from rgbd_jax.models.umdr.dtn_v2 import branch_tokens, inception_kernel

Triple = tuple[str, str, tuple[int, ...]]
STREAMS = ('Modalit_rgb.', 'Modalit_depth.')
NETWORKS = ('DSNV2', 'UMDRFusion')


# ------------------------------------------------------------------ entries

def _bn(p: str) -> Iterator[Triple]:
  for leaf, kind in (('weight', 'param'), ('bias', 'param'), ('running_mean', 'stat'),
                     ('running_var', 'stat'), ('num_batches_tracked', 'count')):
    yield f'{p}.{leaf}', kind, ()


def _ln(p: str) -> Iterator[Triple]:
  yield f'{p}.weight', 'param', ()
  yield f'{p}.bias', 'param', ()


def _linear(p: str, bias: bool = True) -> Iterator[Triple]:
  yield f'{p}.weight', 'linear', ()
  if bias:
    yield f'{p}.bias', 'param', ()


def _unit(p: str, kernel: tuple[int, int, int]) -> Iterator[Triple]:
  yield f'{p}.conv3d.weight', 'conv', kernel
  yield from _bn(f'{p}.bn')


def _inception(p: str, kernel: tuple[int, int, int]) -> Iterator[Triple]:
  one = (1, 1, 1)
  for name, k in (('b0', one), ('b1a', one), ('b1b', kernel), ('b2a', one), ('b2b', kernel), ('b3b', one)):
    yield from _unit(f'{p}.{name}', k)


def _transformer_layer(p: str) -> Iterator[Triple]:
  yield from _ln(f'{p}.0.norm')
  yield from _linear(f'{p}.0.fn.to_qkv', bias=False)
  yield from _linear(f'{p}.0.fn.to_out.0')
  yield from _ln(f'{p}.1.norm')
  yield from _linear(f'{p}.1.fn.fc1')
  yield from _linear(f'{p}.1.fn.fc2')


def dsnv2_entries(p: str, config: ml_collections.ConfigDict) -> Iterator[Triple]:
  """DSNNetV2 (with its heads); `p` is '' or a stream prefix ending in '.'."""
  m = config.model
  for i, k in ((0, (1, 7, 7)), (2, (1, 1, 1)), (3, (1, 3, 3))):
    yield from _unit(f'{p}stem.{i}', k)
  child = 0
  for stage in range(int(m.sms_depth)):
    for mixed in ('Mixed1', 'Mixed2'):
      yield from _inception(f'{p}SMS_layers.{child}.{mixed}', (1, 3, 3))
    child += 2 if stage == CHANNEL_POOL_AFTER else 1  # Channel_Pooling has no tensors
    rcm = f'{p}SMS_layers.{child}'
    yield from _linear(f'{rcm}.q', bias=False)
    yield from _linear(f'{rcm}.k', bias=False)
    yield from _linear(f'{rcm}.TM_project.0', bias=False)
    yield from _linear(f'{rcm}.TM_project.2', bias=False)
    yield from _ln(f'{rcm}.TM_project.3')
    yield from _linear(f'{rcm}.linear')
    child += 1
  yield from _ln(f'{p}LinearMap.1')
  yield from _linear(f'{p}LinearMap.2')
  tokens = branch_tokens(int(m.sample_duration), int(m.intar_fatcer))
  for j in range(len(tokens)):
    yield f'{p}dtn.cls_tokens.{j}.cls_token', 'param', ()
    yield f'{p}dtn.cls_tokens.{j}.pos_embedding', 'param', ()
  for j, n in enumerate(tokens):
    branch = f'{p}dtn.multi_scale_transformers.{j}'
    yield from _inception(f'{branch}.0', (inception_kernel(n), 1, 1))
    for layer in range(int(m.N)):
      yield from _transformer_layer(f'{branch}.2.layers.{layer}')
    yield from _ln(f'{branch}.3.0')
    yield from _linear(f'{branch}.3.2')


def _enhance(p: str) -> Iterator[Triple]:
  for gate in ('mlp_rgb', 'mlp_depth'):
    yield from _linear(f'{p}.{gate}.0')
    yield from _linear(f'{p}.{gate}.2')
  yield from _ln(f'{p}.norm')


def _attention_net(p: str) -> Iterator[Triple]:
  for name in ('q', 'k', 'v'):
    yield from _linear(f'{p}.{name}', bias=False)
  yield from _ln(f'{p}.norm')
  yield from _ln(f'{p}.ffn.norm')
  yield from _linear(f'{p}.ffn.fn.fc1')
  yield from _linear(f'{p}.ffn.fn.fc2')


def cross_fusion_entries(config: ml_collections.ConfigDict) -> Iterator[Triple]:
  """The fusion network's own tensors (the original's CrossFusionNet checkpoint)."""
  m = config.model
  yield 'pos_embedding_M', 'param', ()
  yield 'pos_embedding_K', 'param', ()
  for i in range(int(m.scc_depth)):
    yield from _enhance(f'SCC_Module.att_nets.{i}.0')
    yield from _attention_net(f'SCC_Module.att_nets.{i}.1')
    yield from _attention_net(f'SCC_Module.att_nets.{i}.2')
  yield from _ln('SCC_Module.norm')
  yield from _enhance('temp_enhance_module')
  for i in range(int(m.tcc_depth)):
    yield from _attention_net(f'TimesFormer.att_nets.{i}.0')
    yield from _attention_net(f'TimesFormer.att_nets.{i}.1')
  yield from _ln('TimesFormer.norm')
  yield from _linear('classifier1')
  yield from _linear('classifier2')
  yield from _ln('norm1')
  yield from _ln('norm2')


def umdr_fusion_entries(config: ml_collections.ConfigDict) -> Iterator[Triple]:
  """The port's UMDRFusion tree: the fusion network's tensors, then each stream's under its prefix."""
  yield from cross_fusion_entries(config)
  for prefix in STREAMS:
    yield from dsnv2_entries(prefix, config)


ENTRIES = {'DSNV2': lambda config: dsnv2_entries('', config), 'UMDRFusion': umdr_fusion_entries}


def streams_in_own_files(network: str) -> bool:
  """Whether the original keeps a network's streams in checkpoints of their own (train_fusion.py does)."""
  return network == 'UMDRFusion'


def split_fusion_state_dict(state_dict: Mapping[str, np.ndarray]
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
  """A UMDRFusion state_dict as the original's three checkpoints: (fusion, rgb stream, depth stream)."""
  fusion, streams = {}, ({}, {})
  for k, v in state_dict.items():
    for s, prefix in enumerate(STREAMS):
      if k.startswith(prefix):
        streams[s][k[len(prefix):]] = v
        break
    else:
      fusion[k] = v
  return fusion, streams[0], streams[1]


# ---------------------------------------------------------------- inference

def looks_like(state_dict: Mapping[str, np.ndarray]) -> str | None:
  """'DSNV2', 'UMDRFusion', 'UMDRFusion-only' (the fusion network's own checkpoint) or None."""
  keys = list(state_dict)
  if any(k.startswith('Modalit_rgb.SMS_layers.') for k in keys):
    return 'UMDRFusion'
  if any(k.startswith(('SCC_Module.', 'TimesFormer.')) for k in keys) or 'pos_embedding_M' in state_dict:
    return 'UMDRFusion-only'
  if any(k.startswith(('SMS_layers.', 'stem.0.')) for k in keys):
    return 'DSNV2'
  return None


def _shape(sd: Mapping[str, np.ndarray], key: str, where: str) -> tuple[int, ...]:
  if key not in sd:
    raise ValueError(f'{where}: checkpoint has no tensor {key!r}, which every original {where} has')
  return tuple(np.shape(sd[key]))


def _indices(sd: Mapping[str, np.ndarray], pattern: str) -> list[int]:
  rx = re.compile(pattern)
  return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _infer_dsnv2(sd: Mapping[str, np.ndarray], p: str) -> dict[str, object]:
  where = f'DSNV2 stream {p[:-1]}' if p else 'DSNV2'
  found: dict[str, object] = {'model.Network': 'DSNV2'}
  stages = _indices(sd, re.escape(p) + r'SMS_layers\.(\d+)\.Mixed1\.')
  rcms = _indices(sd, re.escape(p) + r'SMS_layers\.(\d+)\.q\.weight$')
  if not rcms:
    raise ValueError(f'{where}: checkpoint has no SMS_layers.<i>.q.weight (the RCMs)')
  found['model.sms_depth'] = len(stages)
  frames = _shape(sd, f'{p}SMS_layers.{rcms[0]}.q.weight', where)[1]  # the RCM's Linear acts on time
  found['model.sample_duration'] = frames
  found['model.width'] = _shape(sd, f'{p}stem.0.conv3d.weight', where)[0] / 64.0
  found['model.dim'] = _shape(sd, f'{p}LinearMap.2.weight', where)[0]
  layers = _indices(sd, re.escape(p) + r'dtn\.multi_scale_transformers\.0\.2\.layers\.(\d+)\.')
  if not layers:
    raise ValueError(f'{where}: checkpoint has no dtn.multi_scale_transformers.0.2.layers.<l> (the Transformer)')
  found['model.N'] = max(layers) + 1
  layer = f'{p}dtn.multi_scale_transformers.0.2.layers.0'
  found['model.mlp_dim'] = _shape(sd, f'{layer}.1.fn.fc1.weight', where)[0]
  found['inner_dim'] = _shape(sd, f'{layer}.0.fn.to_qkv.weight', where)[0] // 3
  first = _shape(sd, f'{p}dtn.cls_tokens.0.pos_embedding', where)[1] - 1
  intar = frames // first if first else 0
  if not first or frames // intar != first:
    raise ValueError(f'{where}: the first DTN branch has {first} tokens, which no intar_fatcer gives at '
                     f'sample_duration={frames}')
  found['model.intar_fatcer'] = intar
  found['model.num_classes'] = _shape(sd, f'{p}dtn.multi_scale_transformers.0.3.2.weight', where)[0]
  return found


def infer_architecture(state_dict: Mapping[str, np.ndarray]) -> dict[str, object]:
  """What a journal state_dict fixes about the network, as torch_layout.infer_architecture reports it."""
  kind = looks_like(state_dict)
  if kind == 'DSNV2':
    return _infer_dsnv2(state_dict, '')
  if kind == 'UMDRFusion-only':
    raise ValueError(
        f'this is the journal fusion network\'s own checkpoint (CrossFusionNet, {len(state_dict)} tensors, '
        'no stream): train_fusion.py keeps the two DSNV2 streams in their own checkpoints; give them as '
        'model.rgb_checkpoint and model.depth_checkpoint (rgbd_jax.convert.umdr_import reads all three)')
  if kind != 'UMDRFusion':
    raise ValueError('not a checkpoint of the journal networks (no SMS_layers / SCC_Module tensors)')
  rgb, depth = (_infer_dsnv2(state_dict, p) for p in STREAMS)
  differ = {k: (v, depth[k]) for k, v in rgb.items() if depth.get(k) != v}
  if differ:
    raise ValueError(f'the rgb and depth streams differ in structure (rgb, depth): {differ}; '
                     'the original builds both from one set of arguments')
  found = dict(rgb)
  found['model.Network'] = 'UMDRFusion'
  found['model.scc_depth'] = len(_indices(state_dict, r'SCC_Module\.att_nets\.(\d+)\.'))
  found['model.tcc_depth'] = len(_indices(state_dict, r'TimesFormer\.att_nets\.(\d+)\.'))
  positions = _shape(state_dict, 'pos_embedding_M', 'UMDRFusion')[1]
  if positions != found['model.sample_duration'] + 1:
    raise ValueError(f'the fusion network has {positions} positions (sample_duration + 1) but its streams '
                     f'were built for sample_duration={found["model.sample_duration"]}')
  classes = _shape(state_dict, 'classifier1.weight', 'UMDRFusion')[0]
  if classes != found['model.num_classes']:
    raise ValueError(f'the fusion network has {classes} classes, its streams {found["model.num_classes"]}')
  return found


# ------------------------------------------------------------ when nothing fits

# model.Network -> (what it is, a few keys it is recognised by; '#': an index that varies with the depth)
SIGNATURES = {
    'I3DWTrans': ('the conference unimodal network (I3DWTrans)',
                  ('Mixed_3b.b0.conv3d.weight', 'dtn.mlp_head_small.1.weight')),
    'FusionNet': ('the conference fusion network (FusionNet)',
                  ('Modalit_rgb.Mixed_3b.b0.conv3d.weight', 'fusion_model.efc.weight')),
    'DSNV2': ('the journal unimodal network (DSNV2)',
              ('SMS_layers.0.Mixed1.b0.conv3d.weight', 'dtn.cls_tokens.0.cls_token')),
    'UMDRFusion': ('the journal fusion network (UMDRFusion)', ('SCC_Module.att_nets.#.1.q.weight', 'pos_embedding_M')),
}


def pattern(key: str) -> str:
  """A key with the indices that grow with a depth (layers, blocks) replaced by '#'."""
  return re.sub(r'\b(layers|att_nets|multi_scale_transformers)\.\d+', r'\1.#', key)


def key_report(state_dict: Mapping[str, np.ndarray], expected: list[str], limit: int = 12) -> str:
  """Missing and unexpected keys against `expected`, grouped by pattern (one example key each)."""
  have: dict[str, str] = {}
  for k in state_dict:
    have.setdefault(pattern(k), k)
  want: dict[str, str] = {}
  for k in expected:
    want.setdefault(pattern(k), k)
  missing = [want[p] for p in want if p not in have]
  unexpected = [have[p] for p in have if p not in want]
  show = lambda ks: ', '.join(ks[:limit]) + (f' (+{len(ks) - limit} more)' if len(ks) > limit else '')
  return (f'missing ({len(missing)} kinds of key): {show(missing) or "none"}; '
          f'unexpected ({len(unexpected)} kinds of key): {show(unexpected) or "none"}')


def resemblance(state_dict: Mapping[str, np.ndarray]) -> tuple[str | None, str]:
  """(model.Network, in words) of the known network a state_dict looks most like; (None, ...) if none."""
  have = {pattern(k) for k in state_dict}
  scores = {name: sum(s in have for s in keys) for name, (_, keys) in SIGNATURES.items()}
  best = max(scores, key=scores.get)
  if not scores[best]:
    return None, f'it looks like none of the known networks (first keys: {", ".join(list(state_dict)[:5])})'
  return best, f'it looks most like {SIGNATURES[best][0]}'
