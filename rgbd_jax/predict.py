"""Inference on your own videos and frame folders.

    from rgbd_jax.predict import Recognizer
    recognizer = Recognizer.from_checkpoint('runs/synthetic')          # a training workdir,
    # ... or a converted directory, or an original .pth.tar with config=... for its dataset
    prediction = recognizer.predict(rgb='clip.mp4')                     # or a folder of frames
    prediction = recognizer.predict(rgb='a.mp4', depth='a_depth/')       # the fusion network
    print(prediction.line())

An input is a video file (decoded with PyAV, else OpenCV: `rgbd_jax.data.video`), a folder of
numbered frames, or an array of frames ((T, H, W, 3) uint8, or (T, H, W) uint8/uint16 depth).
Depth frames that are single-channel (16-bit PNGs, arrays) take the dataset's depth path (ROI crop
and JET colour map, `rgbd_jax.data.depth`); 3-channel ones go the RGB way, as in the datasets.

The clip is made exactly as evaluation makes it (`scripts/evaluate.py`): the evaluation frame
sampling over all n frames, the evaluation crop, the same Pillow/OpenCV transform on each frame
(`clips.load_stream_u8`), uint8 to the device, normalisation and FRP heatmap there
(`on_device.model_inputs`), the network in evaluation mode at the sharpness temperature of the
epoch that trained the weights. So a split video's frame folder gives the logits evaluation gives
it (up to float rounding of a different batch size). `views='CxS'` averages each named logit sum
over C temporal clips x S crops (`rgbd_jax.data.views`); '1x1' is the original protocol.
The jitted forward pass is built once per recognizer and compiled once per input shape.

A raw NTU-RGBD RGB video (`nturgb+d_rgb/<name>.avi`) takes `ntu_roi=` its masked depth maps
(`nturgb+d_depth_masked`, or the video's own folder of them): each frame is cropped around the
subject and JPEG-encoded as scripts/prepare_ntu.py prepares the dataset (`ntu_roi_frames`), so the
clip is the one evaluation reads from the prepared `Images/<name>` folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import logging
import os
import tempfile
from typing import Any, Sequence

import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np
from PIL import Image

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax import parallel
from rgbd_jax.data import class_names as class_names_lib
from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import ntu_prepare
from rgbd_jax.data import splits
from rgbd_jax.data import video as video_lib
from rgbd_jax.data import views as views_lib
from rgbd_jax.models import build
from rgbd_jax.train import evaluation
from rgbd_jax.train import steps

Frames = Any  # a path (video file or frame folder) or an array of frames


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _encode(frame: np.ndarray) -> bytes:
  """An array frame as lossless bytes the evaluation decoder reads back bit for bit (PPM / PNG)."""
  buf = io.BytesIO()
  if frame.ndim == 3 and frame.shape[-1] == 3 and frame.dtype == np.uint8:
    Image.fromarray(frame).save(buf, format='PPM')
  elif frame.ndim == 2 and frame.dtype == np.uint8:
    Image.fromarray(frame).save(buf, format='PNG', compress_level=0)
  elif frame.ndim == 2 and frame.dtype == np.uint16:
    Image.fromarray(frame.astype('<u2')).save(buf, format='PNG', compress_level=0)
  else:
    raise ValueError(f'a frame must be (H, W, 3) uint8, or (H, W) uint8/uint16, got {frame.shape} {frame.dtype}')
  return buf.getvalue()


def ntu_roi_frames(video: str, masks: str, out_root: str) -> str:
  """A raw NTU-RGBD RGB video prepared as scripts/prepare_ntu.py does it; returns its frame folder.

  `masks`: `nturgb+d_depth_masked` (the video's maps in `<name without _rgb>/`) or that folder itself
  (`MDepth-%08d.png`). The frames go to `<out_root>/Images/<name>/` (`ntu_prepare.extract_video`:
  the subject window of each frame, Pillow JPEG at the preparation's quality).
  """
  video = os.fspath(video)
  if not os.path.isfile(video):
    raise FileNotFoundError(f'video not found: {video} (ntu_roi takes a raw NTU-RGBD video file)')
  name = os.path.splitext(os.path.basename(video))[0]
  try:
    ntu_prepare.parse_name(name)
  except ValueError as e:
    raise ValueError(f'{video}: {e}; the ROI preparation finds its depth maps by that name') from None
  masks = os.fspath(masks)
  if os.path.isdir(os.path.join(masks, name[:-4])):
    masks_root = masks
  elif glob.glob(os.path.join(glob.escape(masks), 'MDepth-*.png')):
    masks_root = os.path.join(out_root, 'masks')  # the video's own folder, under the name the preparation looks for
    os.makedirs(masks_root, exist_ok=True)
    os.symlink(os.path.abspath(masks), os.path.join(masks_root, name[:-4]))
  else:
    raise FileNotFoundError(f'no masked depth maps of {name} in {masks}: give nturgb+d_depth_masked (holding '
                            f'{name[:-4]}/) or the folder of its MDepth-%08d.png files')
  ntu_prepare.extract_video(video, masks_root, out_root)
  return os.path.join(out_root, 'Images', name)


class _Input:
  """One stream of one video: a video file, a frame folder or an array of frames."""

  def __init__(self, what: Frames, stream: str, name: str | None = None):
    self.stream = stream
    self._cache: dict[int, tuple[bytes, str]] = {}
    self.array = None
    self.files = None
    self.video = None
    if isinstance(what, np.ndarray):
      array = what[..., 0] if what.ndim == 4 and what.shape[-1] == 1 else what
      if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        raise ValueError(f'{stream} frames: expected (T, H, W, 3) or (T, H, W), got shape {what.shape}')
      if len(array) == 0:
        raise ValueError(f'{stream} frames: the array holds no frame')
      self.array, self.name, self.frames = array, name or f'<{stream} array>', len(array)
      return
    path = os.fspath(what)
    self.name = name or path
    if os.path.isdir(path):
      self.files = video_lib.list_frame_folder(path)
      self.frames = len(self.files)
    elif os.path.exists(path):
      self.video = path
      self.frames = video_lib.count_frames(path)
    else:
      raise FileNotFoundError(f'video not found: {path} (a video file or a folder of frames)')

  def prepare(self, indices: np.ndarray) -> None:
    """Reads the frames of `indices` once (a video is decoded in one pass)."""
    wanted = [int(i) for i in np.unique(indices) if int(i) not in self._cache]
    if self.video is not None and wanted:
      for i, frame in video_lib.read_frames(self.video, wanted).items():
        self._cache[i] = (_encode(frame), f'{self.video} frame {i}')
    elif self.array is not None:
      for i in wanted:
        self._cache[i] = (_encode(np.ascontiguousarray(self.array[i])), f'{self.name} frame {i}')
    elif self.files is not None:
      for i in wanted:
        try:
          with open(self.files[i], 'rb') as f:
            self._cache[i] = (f.read(), self.files[i])
        except OSError as e:
          raise ValueError(f'{self.files[i]}: cannot read the frame ({e})') from None

  def read(self, indices) -> list[tuple[bytes, str]]:
    self.prepare(np.asarray(indices))
    return [self._cache[int(i)] for i in indices]


class _Source:
  """The inputs of one video as a `rgbd_jax.data.sources.Source` (one record)."""
  packed_size = None

  def __init__(self, inputs: dict[str, _Input]):
    self.inputs = inputs
    first = next(iter(inputs.values()))
    self.path = ' + '.join(i.name for i in inputs.values())
    self.records = [splits.VideoRecord(first.name, first.frames, 0, 0)]

  def read(self, record, indices, stream):
    del record
    return self.inputs[stream].read(indices)


def _branch(name: str) -> str:
  """A named logit sum's name in the JSON output: 'top1' -> 'headline', 'top1_xs' -> 'xs'."""
  return 'headline' if name == 'top1' else name[len('top1_'):] if name.startswith('top1_') else name


@dataclasses.dataclass
class Prediction:
  """The scores of one video: each named logit sum averaged over the views, and per view."""
  name: str
  inputs: dict[str, str]                # stream -> what was read
  frames: int
  views: views_lib.Views
  class_names: tuple[str, ...]
  logits: dict[str, np.ndarray]         # 'top1' (the headline), 'top1_xs', ... -> (classes,)
  view_logits: dict[str, np.ndarray]    # same names -> (views, classes), views clip-major
  view_indices: list[list[int]]         # per temporal clip: its frame indices
  view_crops: list[tuple[int, int, int, int]]  # per spatial crop: its box in the resized frame
  epoch: int | None
  temperature: float

  @property
  def probabilities(self) -> np.ndarray:
    return _softmax(self.logits['top1'].astype(np.float64))

  @property
  def label(self) -> int:
    return int(np.argmax(self.logits['top1']))

  def top_k(self, k: int = 5, name: str = 'top1') -> list[tuple[int, str, float]]:
    """(class, class name, probability) of the best `k` of a named logit sum."""
    p = _softmax(self.logits[name].astype(np.float64))
    order = np.argsort(-p, kind='stable')[:k]
    return [(int(i), self.class_names[i], float(p[i])) for i in order]

  def line(self, k: int = 5) -> str:
    best = ', '.join(f'{n} {p:.3f}' for _, n, p in self.top_k(k))
    return f'{self.name}: {best}'

  def to_dict(self, k: int = 5) -> dict[str, Any]:
    entry = lambda top: [{'class': c, 'name': n, 'probability': p} for c, n, p in top]  # noqa: E731
    per_view = []
    for v, (clip, crop) in enumerate(self.views):
      p = _softmax(self.view_logits['top1'][v].astype(np.float64))
      order = np.argsort(-p, kind='stable')[:k]
      per_view.append({'clip': clip, 'crop': crop, 'crop_box': list(self.view_crops[crop]),
                       'top_k': entry([(int(i), self.class_names[i], float(p[i])) for i in order]),
                       'logits': {_branch(n): v_[v].tolist() for n, v_ in self.view_logits.items()}})
    return {
        'video': self.name, 'inputs': self.inputs, 'frames': self.frames, 'views': str(self.views),
        'epoch': self.epoch, 'temperature': self.temperature,
        'prediction': entry(self.top_k(1))[0], 'top_k': entry(self.top_k(k)),
        'scores': {_branch(n): entry(self.top_k(k, n)) for n in self.logits},
        'logits': {_branch(n): v.tolist() for n, v in self.logits.items()},
        'per_view': per_view,
    }


class Recognizer:
  """A trained network ready for videos: `predict(rgb=..., depth=...)`."""

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any], *,
               epoch: int | None = None, class_names: class_names_lib.ClassNames | None = None,
               source: str = 'variables', stream_epochs: dict[str, int | None] | None = None):
    """`stream_epochs`: UMDRFusion's frozen streams' epochs (each stream's temperature;
    `build.build_model`), as a converted directory records them; None: the config's rule."""
    self.config = config
    self.kind = build.network(config)
    self.streams = layouts.streams(config)
    self.keys = clips.FUSION_KEYS if layouts.is_fusion(config) else clips.UNIMODAL_KEYS
    if epoch is None and config.model.sharpness:
      raise ValueError(f'{source} does not say which epoch trained it, and the sharpness temperature '
                       'depends on it: give the epoch (--epoch)')
    self.epoch = epoch
    self.temperature = build.sharpness_temperature(config, 0 if epoch is None else int(epoch))
    self.num_classes = int(configs.num_classes(config))
    self.class_names = class_names or class_names_lib.for_config(config)
    if len(self.class_names) != self.num_classes:
      raise ValueError(f'{self.class_names.source} names {len(self.class_names)} classes, but the '
                       f'checkpoint has {self.num_classes}')
    self.source = source
    self.stream_epochs = stream_epochs
    self.model = build.build_model(config, stream_epochs)
    # One device, placed as evaluation places its arrays (a mesh, replicated variables, the batch on
    # the 'data' axis): on a one-device machine predict and evaluate then share their compilations.
    self._mesh = Mesh(np.asarray(jax.local_devices()[:1]), (parallel.DATA_AXIS,))
    self.variables = jax.device_put(variables, parallel.replicated(self._mesh))
    self._forward = evaluation.jit_named_logits_step(config, stream_epochs)
    self._hp = steps.hparams(self.temperature, 0.0)
    self._explainer = None
    logging.info('%s: %s network, %d classes (names: %s), temperature %.5f (%s)', source,
                 config.model.Network, self.num_classes, self.class_names.source, self.temperature,
                 f'epoch {epoch}' if epoch is not None else 'no sharpness')

  @classmethod
  def from_checkpoint(cls, path: str, config: ml_collections.ConfigDict | None = None,
                      epoch: int | None = None, which: str = 'best', labels: str = '') -> 'Recognizer':
    """From a training workdir (its `which` checkpoint), a converted directory, or an original
    `.pth.tar` (converted on the fly; `config` then names its dataset). The config saved with the
    weights is used unless `config` is given; the epoch (hence the temperature) is the one the
    checkpoint records unless `epoch` is given; class names from `labels` (a file), else the
    dataset's list (`rgbd_jax.data.class_names`)."""
    checkpoint.quiet_orbax_logs()
    path = os.fspath(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f'checkpoint not found: {path}')
    is_workdir = os.path.isdir(os.path.join(path, checkpoint.CHECKPOINTS_DIR))
    config, variables, saved_epoch, what, stream_epochs = evaluation.source_variables(
        path if is_workdir else '', '' if is_workdir else path, which, config)
    names = class_names_lib.for_config(config, labels)
    return cls(config, variables, epoch=saved_epoch if epoch is None else epoch, class_names=names,
               source=what, stream_epochs=stream_epochs)

  # ---------------------------------------------------------------------------- inputs

  def _inputs(self, rgb: Frames | None, depth: Frames | None, name: str | None) -> dict[str, _Input]:
    given = {s: v for s, v in (('rgb', rgb), ('depth', depth)) if v is not None}
    what = ('the fusion network (rgb and depth)' if len(self.streams) == 2
            else f"{'an RGB' if self.streams == ('rgb',) else 'a depth'} network "
                 f"(dataset.type={self.config.dataset.type!r})")
    if set(given) != set(self.streams):
      need = ' and '.join(f'{s}=' for s in self.streams)
      got = ' and '.join(f'{s}=' for s in given) or 'nothing'
      raise ValueError(f'the checkpoint is {what}: give {need} (got {got})')
    inputs = {s: _Input(given[s], s, name if len(self.streams) == 1 else None) for s in self.streams}
    counts = {s: i.frames for s, i in inputs.items()}
    if len(set(counts.values())) > 1:
      raise ValueError('the rgb and depth inputs differ in length: ' + ', '.join(
          f'{inputs[s].name} has {n} frames' for s, n in counts.items()) +
          '; both streams are sampled at the same frame indices, give inputs of the same length')
    n = next(iter(counts.values()))
    if n <= splits.MIN_FRAMES_EXCLUSIVE:
      logging.warning('%s: %d frames; the original drops videos of %d frames or fewer from its splits',
                      next(iter(inputs.values())).name, n, splits.MIN_FRAMES_EXCLUSIVE)
    return inputs

  def clips(self, rgb: Frames | None = None, depth: Frames | None = None, *, views: str = '1x1',
            name: str | None = None) -> tuple[_Source, views_lib.Views, list[dict[str, np.ndarray]]]:
    """The uint8 clips the network sees: per view {clip key: (T, S, S, 3)} (clip-major views)."""
    views = views_lib.parse(views)
    source = _Source(self._inputs(rgb, depth, name))
    record = source.records[0]
    duration = int(self.config.model.sample_duration)
    for stream in self.streams:
      source.inputs[stream].prepare(views_lib.all_indices(record.frames, duration, views))
    out = [evaluation.view_clips(self.config, source, record, c, s, views) for c, s in views]
    return source, views, out

  # ---------------------------------------------------------------------------- predict

  def _run(self, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Named logits of each clip dict, in batches of at most test_batch_size (the last padded)."""
    size = max(1, min(len(batches), int(self.config.common.test_batch_size)))
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(batches), size):
      chunk = batches[start:start + size]
      pad = size - len(chunk)
      batch = {k: np.stack([b[k] for b in chunk] + [np.zeros_like(chunk[0][k])] * pad) for k in chunk[0]}
      # the entries evaluation's batches carry too (unused here): the same program, compiled once
      batch.update(label=np.zeros((size,), np.int32), mask=np.arange(size) < len(chunk),
                   index=np.arange(start, start + size, dtype=np.int32))
      batch = jax.device_put(batch, parallel.batch_sharding(self._mesh))
      out = jax.device_get(self._forward(self.variables, batch, self._hp))['logits']
      for name, logits in out.items():
        collected.setdefault(name, []).append(np.asarray(logits, np.float32)[:len(chunk)])
    return {name: np.concatenate(v) for name, v in collected.items()}

  def predict(self, rgb: Frames | None = None, depth: Frames | None = None, *, views: str = '1x1',
              name: str | None = None, vis_dir: str = '', top_k: int = 5, ntu_roi: str = '') -> Prediction:
    """Scores of one video (see the module docstring); `vis_dir`: also its pictures there
    (`rgbd_jax.train.visualize`: frames, FRP heatmap, Grad-CAM of the predicted class, top-k);
    `ntu_roi`: `rgb` is a raw NTU-RGBD video, prepared with these masked depth maps (`ntu_roi_frames`)."""
    with contextlib.ExitStack() as stack:
      if ntu_roi:
        if rgb is None or isinstance(rgb, np.ndarray):
          raise ValueError('ntu_roi prepares a raw NTU-RGBD RGB video file: give rgb= its path')
        name = name or os.fspath(rgb)
        rgb = ntu_roi_frames(rgb, ntu_roi, stack.enter_context(tempfile.TemporaryDirectory(prefix='ntu_roi_')))
      return self._predict(rgb, depth, views=views, name=name, vis_dir=vis_dir, top_k=top_k)

  def _predict(self, rgb, depth, *, views, name, vis_dir, top_k) -> Prediction:
    source, parsed, view_clips = self.clips(rgb, depth, views=views, name=name)
    view_logits = self._run(view_clips)
    record = source.records[0]
    duration = int(self.config.model.sample_duration)
    prediction = Prediction(
        name=name or record.name, inputs={s: i.name for s, i in source.inputs.items()}, frames=record.frames,
        views=parsed, class_names=tuple(self.class_names.names),
        logits={k: v.mean(axis=0) for k, v in view_logits.items()}, view_logits=view_logits,
        view_indices=[views_lib.clip_indices(record.frames, duration, c, parsed.clips).tolist()
                      for c in range(parsed.clips)],
        view_crops=[views_lib.crop_params(self.config, s, parsed.crops).crop for s in range(parsed.crops)],
        epoch=self.epoch, temperature=self.temperature)
    if vis_dir:
      self.visualize(source, prediction, vis_dir, top_k)
    return prediction

  def visualize(self, source: _Source, prediction: Prediction, out_dir: str, k: int = 5) -> list[str]:
    """Pictures of the single-view (1x1) clip with the Grad-CAM of the predicted class."""
    from rgbd_jax.train import visualize  # pylint: disable=g-import-not-at-top  # matplotlib when asked
    if self._explainer is None:
      self._explainer = visualize.explainer(self.config, self.stream_epochs)
    record = source.records[0]
    clip = evaluation.view_clips(self.config, source, record, 0, 0, views_lib.Views())
    batch = {key: value[None] for key, value in clip.items()}
    out = self._explainer(self.variables, batch, self.temperature, [prediction.label])
    shown = {s: clip[self.keys[s][0]] for s in self.streams}
    maps = {s: {key: v[0] for key, v in out[s].items()} for s in self.streams}
    top = [(n, p) for _, n, p in prediction.top_k(k)]
    label, p = top[0]
    title = f'{prediction.name}: "{label}" (p={p:.3f}, {prediction.views} views)'
    fps = video_lib.fps(source.inputs[self.streams[0]].video) if source.inputs[self.streams[0]].video else None
    prefix = os.path.join(out_dir, visualize.safe_name(prediction.name))
    paths = visualize.render(prefix, title=title, clips_u8=shown, maps=maps, top_k=top,
                             cam_class=self.class_names[prediction.label], fps=min(fps or 8.0, 12.0))
    logging.info('pictures of %s: %s', prediction.name, ', '.join(paths))
    return paths

  def predict_many(self, videos: Sequence[dict[str, Frames]], **kwargs) -> list[Prediction]:
    """`predict(**video, **kwargs)` for each of `videos` (dicts with 'rgb' and/or 'depth')."""
    return [self.predict(**v, **kwargs) for v in videos]
