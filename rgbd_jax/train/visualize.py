"""Pictures of a prediction: sampled frames with the FRP heatmap and a class activation map.

Per video, `render` writes `<name>.png` (a strip of frames: the clip as the network sees it, the
FRP heatmap over it, the class activation map over it, one set of rows per stream; beside them the
top-k bar chart) and `<name>.gif` (every frame of the clip, the same three panels side by side).

The class activation map is Grad-CAM on the spatial stem's last block, of each stream for the fusion
networks: `Mixed_5c` in the conference networks; in the journal's (DSNV2, UMDRFusion) the output
of `SMS_layers` (the last SMS stage after its RCM: the original's `self.feat`, what the spatial
mean before LinearMap reads). With A (T, h, w, C) that output and G the gradient of the class's
logit with respect to it, frame t's map is ReLU(sum_c alpha[t, c] A[t, :, :, c]) with
alpha[t, c] = mean over h, w of G[t, :, :, c]. The stem runs on each frame alone (the journal's
RCM mixes channels within a frame) and the network reads each frame's features through their
spatial mean, so alpha[t, c] is that frame's channel weight (frames the temporal model ignores get
small maps): the map is the first-order contribution of each location of each frame to the logit.
Maps are upsampled bilinearly to the clip's size and divided by the clip's maximum; so is the FRP
heatmap (`on_device.heatmap`, what the network's FRP modules read). Networks without an FRP input
(the journal's) get no heatmap row. The class is the headline logits' (UMDRFusion: the mean of
both streams' and both fusion classifiers' logits, through the frozen streams).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Sequence

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from rgbd_jax import configs  # noqa: E402
from rgbd_jax.data import class_names as class_names_lib  # noqa: E402
from rgbd_jax.data import clips  # noqa: E402
from rgbd_jax.data import layouts  # noqa: E402
from rgbd_jax.data import on_device  # noqa: E402
from rgbd_jax.models import build  # noqa: E402

# the stem's last spatial block: the conference's Mixed_5c; the journal's SMS_layers (its first output)
CAM_BLOCKS = ('Mixed_5c', 'SMS_layers')
COLUMNS = 8              # frames in the PNG strip
CMAP = 'jet'
ALPHA = 0.5              # overlay opacity of the maps


# ----------------------------------------------------------------------------------- maps

def _stream_of(path: tuple[str, ...], config: ml_collections.ConfigDict) -> str:
  for part in path:
    if part.startswith('Modalit_'):
      return part[len('Modalit_'):]
  return layouts.streams(config)[0]


def _apply(model, config, variables, batch, temp, deltas):
  """Forward pass that adds `deltas[path]` to (and captures) each CAM block's output."""
  kind = build.network(config)
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  inputs = on_device.model_inputs(batch, keys, w=int(config.model.w), dtype=build.compute_dtype(config))
  captured = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.name in CAM_BLOCKS:
      key = '/'.join(context.module.path)
      feature = out[0] if isinstance(out, tuple) else out
      if deltas is not None:
        feature = feature + deltas[key].astype(feature.dtype)
      captured[key] = feature
      out = (feature, *out[1:]) if isinstance(out, tuple) else feature
    return out

  with nn.intercept_methods(interceptor):
    out = model.apply(variables, *[inputs[k] for k in kind.input_keys], train=False, temp=temp)
  return out, captured, inputs


class Explainer:
  """(variables, uint8 batch, temperature, target classes) -> logits, FRP heatmaps, Grad-CAMs.

  One jitted function per input shape, as the evaluation step.
  """

  def __init__(self, config: ml_collections.ConfigDict, stream_epochs: dict[str, int | None] | None = None):
    config = config.copy_and_resolve_references()
    config.model.remat = False  # same variables; no backward-pass recomputation needed here
    self.config = config
    self.model = build.build_model(config, stream_epochs)
    self.kind = build.network(config)
    self._shapes: dict[Any, dict[str, jax.ShapeDtypeStruct]] = {}
    self._fn = jax.jit(self._explain)

  def _explain(self, variables, batch, temp, target, deltas):
    def score(d):
      out, captured, inputs = _apply(self.model, self.config, variables, batch, temp, d)
      logits = out[self.kind.headline].astype(jnp.float32)
      # a negative target: the predicted class
      tgt = jnp.where(target < 0, jnp.argmax(jax.lax.stop_gradient(logits), -1), target)
      picked = jnp.take_along_axis(logits, tgt[:, None], axis=1)
      return jnp.sum(picked), (captured, inputs, logits, tgt)

    grads, (captured, inputs, logits, target) = jax.grad(score, has_aux=True)(deltas)
    cams = {}
    for key, a in captured.items():
      g = grads[key].astype(jnp.float32)
      alpha = jnp.mean(g, axis=(2, 3), keepdims=True)                 # (B, T, 1, 1, C)
      cams[key] = jax.nn.relu(jnp.sum(alpha * a.astype(jnp.float32), axis=-1))  # (B, T, h, w)
    keys = clips.FUSION_KEYS if layouts.is_fusion(self.config) else clips.UNIMODAL_KEYS
    heat = {heat_key: inputs[heat_key][..., 0] for _, heat_key in dict.fromkeys(keys.values())
            if heat_key in self.kind.input_keys}
    return logits, cams, heat, target

  def _cam_shapes(self, variables, batch, temp) -> dict[str, jax.ShapeDtypeStruct]:
    key = tuple((k, v.shape) for k, v in sorted(batch.items()))
    if key not in self._shapes:
      def capture(v, b):
        return _apply(self.model, self.config, v, b, temp, None)[1]
      self._shapes[key] = jax.eval_shape(capture, variables, batch)
    return self._shapes[key]

  def __call__(self, variables, batch: dict[str, np.ndarray], temp, target: Sequence[int] | None = None
               ) -> dict[str, Any]:
    """Per stream: 'heatmap' (B, T, S, S) and 'cam' (B, T, S, S) in [0, 1] (absent when the network
    has none); 'logits' (B, classes) of the headline; 'target' (B,) the classes of the maps
    (`target`, default the predicted ones)."""
    shapes = self._cam_shapes(variables, batch, temp)
    deltas = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
    hp_temp = jnp.asarray(temp, dtype=jnp.result_type(float))
    b = next(iter(batch.values())).shape[0]
    target = np.full((b,), -1, np.int32) if target is None else np.asarray(target, np.int32)
    logits, cams, heat, target = jax.device_get(self._fn(variables, batch, hp_temp, target, deltas))
    keys = clips.FUSION_KEYS if layouts.is_fusion(self.config) else clips.UNIMODAL_KEYS
    size = int(self.config.model.sample_size)
    out: dict[str, Any] = {'logits': np.asarray(logits), 'target': np.asarray(target)}
    for stream in layouts.streams(self.config):
      clip_key, heat_key = keys[stream]
      maps = {}
      if heat_key in heat:
        maps['heatmap'] = _unit(np.asarray(heat[heat_key], np.float32))
      cam_keys = [k for k in cams if _stream_of(tuple(k.split('/')), self.config) == stream]
      if cam_keys:
        maps['cam'] = _unit(_upsample(np.asarray(cams[cam_keys[0]], np.float32), size))
      out[stream] = maps
    return out


def explainer(config: ml_collections.ConfigDict, stream_epochs: dict[str, int | None] | None = None
              ) -> Explainer:
  """The `Explainer` of a config (and stream epochs: `build.build_model`), one per network (cached on the
  config's JSON): compiled once per shape."""
  return _explainer(configs.to_json(config), None if stream_epochs is None else tuple(sorted(stream_epochs.items())))


@functools.lru_cache(maxsize=4)
def _explainer(config_json: str, stream_epochs) -> Explainer:
  return Explainer(configs.from_json(config_json), None if stream_epochs is None else dict(stream_epochs))


def _upsample(maps: np.ndarray, size: int) -> np.ndarray:
  """(B, T, h, w) -> (B, T, size, size), bilinear."""
  b, t = maps.shape[:2]
  flat = maps.reshape(b * t, *maps.shape[2:])
  up = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in flat])
  return up.reshape(b, t, size, size)


def _unit(maps: np.ndarray) -> np.ndarray:
  """Each clip's maps divided by the clip's maximum (zeros stay zeros)."""
  top = maps.reshape(maps.shape[0], -1).max(axis=1)
  top = np.where(top > 0, top, 1.0).reshape((-1,) + (1,) * (maps.ndim - 1))
  return np.clip(maps / top, 0.0, 1.0)


# ------------------------------------------------------------------------------ rendering

def _colour(maps: np.ndarray) -> np.ndarray:
  """Values in [0, 1] -> RGB uint8 through the colour map."""
  return (matplotlib.colormaps[CMAP](maps)[..., :3] * 255).astype(np.uint8)


def overlay(frames: np.ndarray, maps: np.ndarray) -> np.ndarray:
  """uint8 frames (..., H, W, 3) with maps (..., H, W) in [0, 1] blended over them."""
  return ((1 - ALPHA) * frames + ALPHA * _colour(maps)).astype(np.uint8)


def safe_name(name: str) -> str:
  """A video name as a file name (folders flattened)."""
  keep = ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in name.replace(os.sep, '__'))
  return keep.strip('._') or 'video'


def render(prefix: str, *, title: str, clips_u8: dict[str, np.ndarray], maps: dict[str, dict[str, np.ndarray]],
           top_k: Sequence[tuple[str, float]], cam_class: str, fps: float = 8.0) -> list[str]:
  """Writes `<prefix>.png` and `<prefix>.gif`; returns their paths.

  clips_u8: stream -> (T, S, S, 3) uint8; maps: stream -> {'heatmap'?: (T, S, S), 'cam'?: (T, S, S)}
  in [0, 1]; top_k: (class name, probability) pairs, best first.
  """
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  rows = []  # (label, (T, S, S, 3) uint8, has colour bar)
  for stream, clip in clips_u8.items():
    rows.append((f'{stream} clip', clip, None))
    m = maps.get(stream, {})
    if 'heatmap' in m:
      rows.append((f'{stream}: FRP heatmap', overlay(clip, m['heatmap']), 'FRP heatmap / clip max'))
    if 'cam' in m:
      rows.append((f'{stream}: Grad-CAM\n"{cam_class}"', overlay(clip, m['cam']), 'Grad-CAM / clip max'))
  t = next(iter(clips_u8.values())).shape[0]
  columns = np.unique(np.linspace(0, t - 1, min(COLUMNS, t)).round().astype(int))
  fig = plt.figure(figsize=(1.6 * len(columns) + 4.5, 1.6 * len(rows) + 0.9))
  # columns: the frames, the colour bars, a gap for their labels, the bar chart
  grid = fig.add_gridspec(len(rows), len(columns) + 3, width_ratios=[1] * len(columns) + [0.08, 0.55, 2.4],
                          wspace=0.05, hspace=0.08)
  for r, (label, images, bar) in enumerate(rows):
    for j, f in enumerate(columns):
      ax = fig.add_subplot(grid[r, j])
      ax.imshow(images[f])
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(f'frame {f + 1}/{t}', fontsize=8)
      if j == 0:
        ax.set_ylabel(label, fontsize=8)
    if bar:
      cax = fig.add_subplot(grid[r, len(columns)])
      fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), CMAP), cax=cax)
      cax.tick_params(labelsize=6)
      cax.set_ylabel(bar, fontsize=7)
  ax = fig.add_subplot(grid[:, len(columns) + 2])
  names = [n for n, _ in top_k][::-1]
  probs = [p for _, p in top_k][::-1]
  bars = ax.barh(range(len(names)), probs, color=['tab:blue'] * (len(names) - 1) + ['tab:red'])
  ax.set_yticks(range(len(names)), names, fontsize=8)
  ax.yaxis.tick_right()
  ax.set_xlim(0, 1)
  ax.set_xlabel('probability', fontsize=8)
  ax.set_title(f'top-{len(names)}', fontsize=9)
  for b, p in zip(bars, probs):
    ax.text(min(p + 0.02, 0.8), b.get_y() + b.get_height() / 2, f'{p:.3f}', va='center', fontsize=7)
  fig.suptitle(title, fontsize=10)
  png = prefix + '.png'
  fig.savefig(png, dpi=90, bbox_inches='tight')
  plt.close(fig)
  gif = prefix + '.gif'
  _write_gif(gif, rows, title, fps)
  return [png, gif]


def _write_gif(path: str, rows, title: str, fps: float) -> None:
  """Frame t: each stream's clip | heatmap | CAM side by side, streams stacked, a caption above."""
  per_stream: list[list[np.ndarray]] = []
  for label, images, _ in rows:
    if label.endswith(' clip'):
      per_stream.append([images])
    else:
      per_stream[-1].append(images)
  t, s = rows[0][1].shape[:2]
  scale = max(1, int(np.ceil(128 / s)))
  caption = 14
  frames = []
  for f in range(t):
    bands = [np.concatenate([p[f] for p in panels], axis=1) for panels in per_stream]
    width = max(b.shape[1] for b in bands)
    body = np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0))) for b in bands], axis=0)
    img = Image.fromarray(body).resize((body.shape[1] * scale, body.shape[0] * scale), Image.Resampling.NEAREST)
    canvas = Image.new('RGB', (img.width, img.height + caption), 'white')
    canvas.paste(img, (0, caption))
    ImageDraw.Draw(canvas).text((2, 1), f'{f + 1}/{t}  {title}'[:max(8, img.width // 6)], fill='black')
    frames.append(canvas.convert('P', palette=Image.Palette.ADAPTIVE))
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / max(fps, 1.0)), loop=0)


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def top_k(probabilities: np.ndarray, names: Sequence[str], k: int) -> list[tuple[str, float]]:
  order = np.argsort(-probabilities)[:k]
  return [(names[i], float(probabilities[i])) for i in order]


def explain_and_render(explainer: Explainer, variables, clips_u8: dict[str, np.ndarray], temp: float,
                       names: Sequence[str], prefix: str, title: str, k: int = 5,
                       target: int | None = None, fps: float = 8.0) -> list[str]:
  """One video: the Grad-CAM of `target` (default: the predicted class) and both pictures.

  clips_u8: the batch's clip keys ('video', or 'rgb' and 'depth') -> (T, S, S, 3) uint8.
  """
  config = explainer.config
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  batch = {key: np.asarray(clip)[None] for key, clip in clips_u8.items()}
  out = explainer(variables, batch, temp, None if target is None else [target])
  target = int(out['target'][0])
  probs = _softmax(np.asarray(out['logits'][0], np.float64))
  streams = layouts.streams(config)
  shown = {stream: clips_u8[keys[stream][0]] for stream in streams}
  maps = {stream: {k_: v[0] for k_, v in out[stream].items()} for stream in streams}
  return render(prefix, title=title, clips_u8=shown, maps=maps, top_k=top_k(probs, names, k),
                cam_class=names[target], fps=fps)


def worst_videos(config: ml_collections.ConfigDict, variables, arrays: dict[str, np.ndarray], temp: float,
                 out_dir: str, count: int = 8, labels: str = '', k: int = 5,
                 stream_epochs: dict[str, int | None] | None = None) -> list[str]:
  """Pictures of the `count` validation videos whose true class got the lowest probability.

  `arrays` is `evaluation.evaluate`'s (headline logits, labels, split-file rows). Each picture
  shows the Grad-CAM of the predicted class; the title names the true and predicted classes.
  `stream_epochs`: UMDRFusion's streams' epochs (`build.build_model`).
  """
  names = class_names_lib.for_config(config, labels).names
  probs = _softmax(np.asarray(arrays['logits'], np.float64))
  truth = np.asarray(arrays['labels'], np.int64)
  p_true = probs[np.arange(len(truth)), truth]
  order = np.argsort(p_true, kind='stable')[:max(0, int(count))]
  loader = clips.ClipLoader(config, 'valid')
  position = {r.row: i for i, r in enumerate(loader.source.records)}
  explain = explainer(config, stream_epochs)
  keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
  written = []
  for rank, i in enumerate(order):
    record = loader.source.records[position[int(arrays['index'][i])]]
    raw = loader.load_u8(position[record.row])
    clips_u8 = {keys[s][0]: raw[s] for s in layouts.streams(config)}
    pred = int(np.argmax(probs[i]))
    title = (f'{record.name}: true "{names[truth[i]]}" (p={p_true[i]:.3f}), '
             f'predicted "{names[pred]}" (p={probs[i, pred]:.3f})')
    prefix = os.path.join(out_dir, f'{rank:03d}_{safe_name(record.name)}')
    written += explain_and_render(explain, variables, clips_u8, temp, names, prefix, title, k, target=pred)
    logging.info('visualised %s', prefix)
  return written

