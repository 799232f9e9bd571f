"""Config -> network: the one place that knows each network kind.

`NETWORKS` holds one `NetworkKind` per value of `model.Network`: how to build
it, the inputs it takes (in call order), its headline and named logits, and
its training objective. Training, evaluation, the converter and the tools ask
this description instead of testing the network's name. It is also the only
place that reads the config for the models: modules get plain fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rgbd_jax import configs
from rgbd_jax.models import losses as losses_lib
from rgbd_jax.models.dtn import DTN
from rgbd_jax.models.fusion import CrossFusionNet
from rgbd_jax.models.recognizer import DSNNet
from rgbd_jax.models.umdr.dsn_v2 import DSNNetV2
from rgbd_jax.models.umdr.dtn_v2 import DTNNetV2
from rgbd_jax.models.umdr.fusion import UMDRFusion

WARMUP_TEMP_EPOCHS = 30  # the original's DTN default
MIN_SIZE = 32            # the smallest H = W the stem takes; every parameter shape is fixed by it

Out = Mapping[str, jax.Array]


def compute_dtype(config: ml_collections.ConfigDict):
  """model.dtype as a jnp dtype (float64 only for parity runs under x64)."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}
  if config.model.dtype not in dtypes:
    raise ValueError(f'model.dtype must be one of {sorted(dtypes)}, got {config.model.dtype!r}')
  return dtypes[config.model.dtype]


def param_dtype(config: ml_collections.ConfigDict):
  """Parameters, optimiser state and BatchNorm statistics: float32 (float64 in parity runs)."""
  return jnp.float64 if compute_dtype(config) == jnp.float64 else jnp.float32


def _dsn(config: ml_collections.ConfigDict, num_classes: int | None) -> DSNNet:
  m, d = config.model, config.dataset
  dtype, pdtype = compute_dtype(config), param_dtype(config)
  dtn = DTN(
      num_classes=num_classes,
      frames=int(m.sample_duration),
      branch_frames=(int(d.low_frames), int(d.media_frames), int(d.high_frames)),
      dim=int(m.dim), depth=int(m.N), heads=int(m.heads), dim_head=int(m.dim_head),
      mlp_dim=int(m.mlp_dim), dropout=float(m.dropout), knn_attention=float(m.knn_attention),
      recoupling=bool(m.recoupling), se_heads=int(m.SEHeads), rcm_hidden=configs.rcm_hidden(config),
      rcm_dropout=float(m.rcm_dropout), temper=float(m.temper), sharpness=bool(m.sharpness),
      train_sampling=str(m.frame_sampling), dtype=dtype, param_dtype=pdtype, parent=None)
  return DSNNet(num_classes=num_classes, width=float(m.width), frp=bool(m.frp), w=int(m.w), dtn=dtn,
                dtype=dtype, param_dtype=pdtype, remat=bool(m.remat), parent=None)


def _fusion(config: ml_collections.ConfigDict) -> CrossFusionNet:
  return CrossFusionNet(num_classes=configs.num_classes(config), stream=_dsn(config, None),
                        fusion_dropout=float(config.model.fusion_dropout),
                        bce_dropout=float(config.model.bce_dropout),
                        dtype=compute_dtype(config), param_dtype=param_dtype(config))


def _dsnv2(config: ml_collections.ConfigDict, num_classes: int | None = None) -> DSNNetV2:
  """The journal's unimodal network (UMDR); with `num_classes` None: from the config."""
  m = config.model
  dtype, pdtype = compute_dtype(config), param_dtype(config)
  dtn = DTNNetV2(
      num_classes=configs.num_classes(config) if num_classes is None else num_classes,
      frames=int(m.sample_duration), intar_fatcer=int(m.intar_fatcer), dim=int(m.dim), depth=int(m.N),
      heads=int(m.heads), dim_head=int(m.dim_head), mlp_dim=int(m.mlp_dim), dropout=float(m.dropout),
      knn_attention=float(m.knn_attention), train_sampling=str(m.frame_sampling), dtype=dtype,
      param_dtype=pdtype, parent=None)
  return DSNNetV2(frames=int(m.sample_duration), width=float(m.width), sms_depth=int(m.sms_depth),
                  temper=float(m.temper), dtn=dtn, remat=bool(m.remat), dtype=dtype, param_dtype=pdtype,
                  parent=None)


STREAMS = ('rgb', 'depth')


def stream_epochs(config: ml_collections.ConfigDict, recorded: Mapping[str, int | None] | None = None
                  ) -> tuple[int, int]:
  """UMDRFusion: the (rgb, depth) epochs whose sharpness temperatures the frozen streams run at.

  As FeatureCapter: each stream at its own checkpoint's epoch - 1 (`recorded`: stream -> the epoch
  that trained it, as the converter records it in info.json), unless model.stream_epoch >= 0 sets
  both; a stream with nothing recorded gets common.epochs - 1.
  """
  if int(config.model.stream_epoch) >= 0:
    return int(config.model.stream_epoch), int(config.model.stream_epoch)
  recorded = recorded or {}
  unknown = set(recorded) - set(STREAMS)
  if unknown:
    raise ValueError(f'stream epochs are recorded for {sorted(recorded)}; the streams are {STREAMS}')
  default = int(config.common.epochs) - 1
  return tuple(default if recorded.get(s) is None else int(recorded[s]) for s in STREAMS)


def _umdr_fusion(config: ml_collections.ConfigDict,
                 recorded_stream_epochs: Mapping[str, int | None] | None = None) -> UMDRFusion:
  m = config.model
  temps = tuple(sharpness_temperature(config, e) for e in stream_epochs(config, recorded_stream_epochs))
  return UMDRFusion(num_classes=configs.num_classes(config), stream=_dsnv2(config),
                    scc_depth=int(m.scc_depth), tcc_depth=int(m.tcc_depth), heads=int(m.heads),
                    dim_head=int(m.dim_head), mlp_dim=int(m.mlp_dim), dropout=float(m.dropout),
                    stream_temps=temps, dtype=compute_dtype(config), param_dtype=param_dtype(config))


def _dsnv2_distill_weight(config: ml_collections.ConfigDict, epoch: int) -> float:
  """The journal's train.py: 0 while epoch <= --warmup-epochs, then --distill."""
  return 0.0 if epoch <= int(config.common.warmup_epochs) else float(config.common.distill)


def _umdr_fusion_input_losses(config, out: Out, labels, mask=None) -> tuple[dict[str, jax.Array], ...]:
  """train_fusion.py's objective per input stream: the smoothed CE of the fusion logits of that
  stream (fusion_logits_rgb for the rgb clip, fusion_logits_depth for the depth clip), which it
  trains on that clip's own mixed targets."""
  eps = configs.label_smoothing(config)
  out_keys = ('fusion_logits_rgb', 'fusion_logits_depth')
  per_input = []
  for key in out_keys:
    ce = losses_lib.label_smoothing_ce(out[key], labels, eps, mask)
    per_input.append({'total': ce, 'ce': ce, 'distillation': jnp.zeros((), ce.dtype)})
  return tuple(per_input)


def _umdr_fusion_losses(config, out: Out, labels, distill_weight, mask=None) -> dict[str, jax.Array]:
  """train_fusion.py: the smoothed CE of both fusion logits (the frozen streams add nothing)."""
  del distill_weight
  per_input = _umdr_fusion_input_losses(config, out, labels, mask)
  return jax.tree.map(lambda *terms: sum(terms), *per_input)


def _dsnv2_logits(out: Out) -> dict[str, jax.Array]:
  """The conference's, and the journal's Acc_all (xs + xm + xl)."""
  return {**_dsn_logits(out), 'top1_xs+xm+xl': out['xs'] + out['xm'] + out['xl']}


def _umdr_fusion_logits(out: Out) -> dict[str, jax.Array]:
  r, d = out['logits_rgb'], out['logits_depth']
  return {'top1': out['combined'], 'top1_rgb': r, 'top1_depth': d, 'top1_rgb+depth': out['combined_rgbd'],
          'top1_fusion': (out['fusion_logits_rgb'] + out['fusion_logits_depth']) / 2.0}


def _dsn_losses(config, out: Out, labels, distill_weight, mask=None) -> dict[str, jax.Array]:
  c = config.common
  lamdb = [float(x) for x in c.loss_lamdb] if c.MultiLoss else [1.0, 0.0, 0.0, 0.0]
  return losses_lib.dsn_losses(out, labels, loss_lamdb=lamdb, distill_weight=distill_weight,
                               eps=configs.label_smoothing(config), mask=mask)


def _fusion_losses(config, out: Out, labels, distill_weight, mask=None) -> dict[str, jax.Array]:
  # tools/fusion.py adds both streams' distillation with weight 1 from the first epoch, and
  # lib/model/fusion_Net.py weighs its MSE by 1 (Jester.yml's mse_weight is never read).
  del distill_weight
  return losses_lib.fusion_losses(out, labels, eps=configs.label_smoothing(config),
                                  distill_weight=1.0, mse_weight=1.0, mask=mask)


def _dsn_logits(out: Out) -> dict[str, jax.Array]:
  xs, xm, xl = out['xs'], out['xm'], out['xl']
  return {'top1': out['logits'], 'top1_xs': xs, 'top1_xm': xm, 'top1_xl': xl,
          'top1_xs+xm': xs + xm, 'top1_xs+xl': xs + xl, 'top1_xm+xl': xm + xl}


def _fusion_logits(out: Out) -> dict[str, jax.Array]:
  r, d, f = out['logits_rgb'], out['logits_depth'], out['fusion_logits']
  return {'top1': f, 'top1_rgb': r, 'top1_depth': d, 'top1_rgb+depth': r + d, 'top1_all': r + d + f}


@dataclasses.dataclass(frozen=True)
class NetworkKind:
  """What the rest of the port needs to know about one kind of network."""
  name: str                                   # the value of model.Network
  inputs: tuple[tuple[str, int], ...]         # (batch key, channels) in call order (NTHWC)
  build: Callable[[ml_collections.ConfigDict], Any]
  headline: str                               # output key of the headline logits ('top1')
  named_logits: Callable[[Out], dict[str, jax.Array]]  # every reported accuracy's logits, 'top1' first
  losses: Callable[..., dict[str, jax.Array]]  # (config, out, labels, distill_weight, mask) -> {'total', ...}
  # (variable prefix, model config key) of streams initialised from their own unimodal checkpoints
  stream_checkpoints: tuple[tuple[str, str], ...] = ()
  # new (UMDR): (config, epoch) -> distillation weight; None: the conference's rule (train.optim.distill_weight)
  distill_weight: Callable[[ml_collections.ConfigDict, int], float] | None = None
  # new (UMDR): variable prefixes the original never trains (frozen streams: no gradient, no weight decay)
  frozen: tuple[str, ...] = ()
  # new (UMDR): (config, {stream: epoch}) -> the network with each frozen stream at its own epoch's temperature
  build_with_stream_epochs: Callable[[ml_collections.ConfigDict, Mapping[str, Any]], Any] | None = None
  # new (UMDR): (config, out, labels, mask) -> one loss dict per input, summing to `losses`: networks whose
  # inputs the original mixes (MixUp, ShuffleMix) each with a draw and targets of its own (train_fusion.py)
  input_losses: Callable[..., tuple[dict[str, jax.Array], ...]] | None = None

  @property
  def input_keys(self) -> tuple[str, ...]:
    return tuple(k for k, _ in self.inputs)


NETWORKS: dict[str, NetworkKind] = {
    'I3DWTrans': NetworkKind('I3DWTrans', (('video', 3), ('heatmap', 1)),
                             lambda config: _dsn(config, configs.num_classes(config)),
                             'logits', _dsn_logits, _dsn_losses),
    'FusionNet': NetworkKind('FusionNet', (('rgb', 3), ('rgb_heatmap', 1), ('depth', 3), ('depth_heatmap', 1)),
                             _fusion, 'fusion_logits', _fusion_logits, _fusion_losses,
                             stream_checkpoints=(('Modalit_rgb.', 'rgb_checkpoint'),
                                                 ('Modalit_depth.', 'depth_checkpoint'))),
    # The journal (UMDR, TPAMI 2023): the video alone, no FRP heatmap.
    'DSNV2': NetworkKind('DSNV2', (('video', 3),), _dsnv2, 'logits', _dsnv2_logits, _dsn_losses,
                         distill_weight=_dsnv2_distill_weight),
    # train_fusion.py: two frozen DSNV2 streams (strictly loaded, heads included) and the trained fusion.
    'UMDRFusion': NetworkKind('UMDRFusion', (('rgb', 3), ('depth', 3)), _umdr_fusion, 'combined',
                              _umdr_fusion_logits, _umdr_fusion_losses,
                              stream_checkpoints=(('Modalit_rgb.', 'rgb_checkpoint'),
                                                  ('Modalit_depth.', 'depth_checkpoint')),
                              frozen=('Modalit_rgb', 'Modalit_depth'),
                              build_with_stream_epochs=_umdr_fusion,
                              input_losses=_umdr_fusion_input_losses),
}


def network(config: ml_collections.ConfigDict) -> NetworkKind:
  """The description of `config.model.Network`."""
  name = config.model.Network
  if name not in NETWORKS:
    raise ValueError(f'model.Network must be one of {sorted(NETWORKS)}, got {name!r}')
  return NETWORKS[name]


def build_model(config: ml_collections.ConfigDict,
                stream_epochs: Mapping[str, int | None] | None = None):
  """The flax module of `config.model.Network`.

  `stream_epochs` (networks with frozen streams of their own checkpoints: UMDRFusion): stream ->
  the epoch that trained it, for its temperature (see `stream_epochs`); None: the config's rule.
  """
  kind = network(config)
  if stream_epochs is None:
    return kind.build(config)
  if kind.build_with_stream_epochs is None:
    raise ValueError(f'{kind.name} has no streams at epochs of their own: stream_epochs does not apply')
  return kind.build_with_stream_epochs(config, stream_epochs)


def dummy_inputs(config: ml_collections.ConfigDict, batch: int = 1, size: int = MIN_SIZE,
                 abstract: bool = False) -> tuple[Any, ...]:
  """Zero inputs (NTHWC, the compute dtype) that fix every parameter shape; ShapeDtypeStructs if `abstract`."""
  t, dtype = int(config.model.sample_duration), compute_dtype(config)
  shapes = [(batch, t, size, size, c) for _, c in network(config).inputs]
  if abstract:
    return tuple(jax.ShapeDtypeStruct(s, dtype) for s in shapes)
  return tuple(jnp.zeros(s, dtype) for s in shapes)


def init_variables(model, config: ml_collections.ConfigDict, rng: jax.Array) -> dict[str, Any]:
  """Fresh {'params', 'batch_stats'} of `model` (call under jit or eval_shape)."""
  k_params, k_drop, k_frames = jax.random.split(rng, 3)
  variables = model.init({'params': k_params, 'dropout': k_drop, 'frames': k_frames},
                         *dummy_inputs(config), train=False, temp=1.0)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def variable_shapes(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The model's variables as ShapeDtypeStructs (nothing is computed)."""
  model = build_model(config)
  return jax.eval_shape(lambda r: init_variables(model, config, r), jax.random.key(0))


def sharpness_temperature(config: ml_collections.ConfigDict, epoch: int) -> float:
  """linspace(temp[0], temp[1], 30)[epoch] for epoch < 30, then temp[1]; 1.0 without sharpness."""
  if not config.model.sharpness:
    return 1.0
  start, end = (float(v) for v in config.model.temp)
  if epoch < WARMUP_TEMP_EPOCHS:
    return float(np.linspace(start, end, WARMUP_TEMP_EPOCHS)[max(int(epoch), 0)])
  return end
