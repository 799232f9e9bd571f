"""A TensorFlow-free TFDS build of a dataset's videos: array_record shards, one record per video.

Each record keeps every frame file's original encoded bytes (no re-encoding,
so decoding gives exactly the pixels the folders give), with the video's name,
label, frame count and its entry row in the split file. Records are written in
split-file order (shuffling disabled). The entry list of each split is also
stored in the build's metadata, so the loader knows every video without
reading any frames.

    <data_dir>/rgbd_frames/<dataset>_<splits>_<streams>/1.0.0/
        rgbd_frames-<phase>.array_record-000NN-of-000MM, dataset_info.json, features.json, metadata.json

**Packed training build** (`dataset.packed=True`, `prepare_tfds.py --packed`): for training only.
Every frame is decoded, turned into the 3-channel image the pipeline sees (single-channel depth:
ROI crop and JET, as the loader does), resized to `dataset.resize` with the loader's Pillow
filter (bicubic) and re-encoded as JPEG (`quality`, default 90, 4:4:4 chroma), so that training
decodes small JPEGs and skips the big resize
(`.../<dataset>_<splits>_<streams>_packed<W>x<H>/1.0.0`, e.g. `ntu_cs_rgb_packed320x240`; size
and quality in the metadata). With `dataset.packed=True` the training loader reads it (it needs
`common.tfds_data_dir`) and evaluation still reads `common.source` (the original frames, or the
unpacked build): evaluation stays exact. What changes in training clips:

* the rotation (`dataset.rotated`, `angle`) acts on the resized frame, not on the full frame
  before the resize. For an isotropic resize (NTU 640x480 -> 320x240) it is the same geometric
  map; for an anisotropic one (e.g. 640x480 -> 256x256) it is a rotation by the same angle in
  the resized pixel grid, i.e. of a squeezed image. In both the pixels differ by resampling
  (warpAffine's bilinear interpolation on the small frame instead of on the large one), and the
  corners warpAffine fills with black are the resized frame's;
* the JPEG re-encoding loses a little: about one grey level on average at quality 90
  (`tests/test_data_packed.py` measures it; the frames then go through crop/flip/resize as before).
"""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import logging
import multiprocessing
import os
import re

import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from rgbd_jax.data import layouts
from rgbd_jax.data import splits
from rgbd_jax.data import transforms

NAME = 'rgbd_frames'
VERSION = '1.0.0'
DEFAULT_QUALITY = 90  # JPEG quality of packed frames
# Full-resolution chroma (4:4:4): on camera-like 640x480 frames resized to 320x240, at quality 90,
# the mean error against the resized frame is 1.1 grey levels (p99 5) against 2.0 (p99 18) with
# Pillow's default 4:2:0, for 0.14 ms more decoding per frame (0.51 ms) and 30% more bytes.
PACKED_SUBSAMPLING = 0


def frames_key(stream: str) -> str:
  """The feature of a build's record that holds one stream's encoded frames."""
  return f'{stream}_frames'


def packed_size(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(width, height) of packed frames: `dataset.resize`."""
  return tuple(int(v) for v in config.dataset.resize)


def config_name(config: ml_collections.ConfigDict, packed: bool = False) -> str:
  """e.g. 'ntu_cs_rgb' for NTU, splits .../@CS, RGB; 'ntu_cs_rgb_depth' for the fusion network;
  'ntu_cs_rgb_packed320x240' for the packed training build."""
  split_name = os.path.basename(os.path.normpath(config.common.splits)) or 'splits'
  text = '_'.join([config.common.dataset, split_name, *layouts.streams(config)])
  name = re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')
  if packed:
    name += '_packed{}x{}'.format(*packed_size(config))
  return name


def build_dir(config: ml_collections.ConfigDict, data_dir: str | None = None, packed: bool = False) -> str:
  return os.path.join(data_dir or config.common.tfds_data_dir, NAME, config_name(config, packed), VERSION)


def encode_packed(img: Image.Image, where: str, size: tuple[int, int], quality: int) -> bytes:
  """One decoded frame -> the packed build's JPEG bytes (`transforms.pack_frame`, then JPEG)."""
  out = io.BytesIO()
  transforms.pack_frame(img, where, size).save(out, format='JPEG', quality=int(quality), subsampling=PACKED_SUBSAMPLING)
  return out.getvalue()


def _read_frames(paths: dict[str, list[str]], packed: tuple[tuple[int, int], int] | None
                 ) -> dict[str, list[bytes]]:
  """{feature: frame paths} -> {feature: the files' bytes, or packed (size, quality) JPEGs}."""
  out = {}
  for key, files in paths.items():
    frames = []
    for path in files:
      with open(path, 'rb') as f:
        data = f.read()
      if packed is not None:
        data = encode_packed(transforms.decode(data, path), path, *packed)
      frames.append(data)
    out[key] = frames
  return out


class RgbdFrames(tfds.core.GeneratorBasedBuilder):
  """Videos of one dataset, split protocol and stream set, as encoded frame bytes."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'Frames as the original files, split-file order.'}

  def __init__(self, *, rgbd_config: ml_collections.ConfigDict, phases: list[str],
               quality: int | None = None, workers: int = 1, **kwargs):
    self._rgbd_config = rgbd_config
    self._phases = list(phases)
    self._streams = layouts.streams(rgbd_config)
    self._layout = layouts.layout(rgbd_config)
    self._packed = bool(rgbd_config.dataset.packed)
    self._quality = int(DEFAULT_QUALITY if quality is None else quality)
    self._workers = max(1, int(workers))
    if self._packed and self._phases != ['train']:
      raise ValueError(f'a packed build (dataset.packed=True) holds the training split only, got phases '
                       f'{self._phases}: evaluation reads the original frames (exact)')
    if not 1 <= self._quality <= 100:
      raise ValueError(f'JPEG quality must be in 1..100, got {self._quality}')
    self._entries = {p: self._check(p) for p in self._phases}
    kwargs.setdefault('config', tfds.core.BuilderConfig(name=config_name(rgbd_config, self._packed)))
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    frames = {frames_key(s): tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
              for s in self._streams}
    metadata = tfds.core.MetadataDict()
    metadata['entries'] = {p: [[r.name, r.frames, r.label, r.row] for r in e] for p, e in self._entries.items()}
    metadata['streams'] = list(self._streams)
    if self._packed:
      metadata['packed'] = {'size': list(packed_size(self._rgbd_config)), 'quality': self._quality}
      what = ('packed training frames (resized to {}x{}, JPEG quality {})'
              .format(*packed_size(self._rgbd_config), self._quality))
    else:
      what = 'encoded frame files'
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'{self._rgbd_config.common.dataset} videos as {what} '
                    f'(streams {", ".join(self._streams)}), one record per split-file entry.',
        features=tfds.features.FeaturesDict({
            'name': tfds.features.Text(),
            'label': tfds.features.Scalar(dtype=np.int64),
            'num_frames': tfds.features.Scalar(dtype=np.int64),
            'row': tfds.features.Scalar(dtype=np.int64),
            **frames,
        }),
        disable_shuffling=True,
        metadata=metadata,
    )

  def _check(self, phase: str) -> list[splits.VideoRecord]:
    """Entries of a split whose frame files all exist (the others: error, or skipped and counted)."""
    path = splits.split_file(self._rgbd_config, phase)
    kept, skipped = [], 0
    for record in splits.read_split(path):
      missing = [layouts.frame_path(self._layout, record.name, i, s)
                 for s in self._streams for i in range(record.frames)
                 if not os.path.isfile(layouts.frame_path(self._layout, record.name, i, s))]
      if missing:
        message = (f'{path} entry {record.row} ({record.name!r}, {record.frames} frames): '
                   f'{len(missing)} frame file(s) missing, first {missing[0]}')
        if not self._rgbd_config.dataset.skip_bad_videos:
          raise FileNotFoundError(message)
        skipped += 1
        logging.warning('skipping video: %s', message)
        continue
      kept.append(record)
    if skipped:
      logging.warning('%s: %d of %d videos skipped (missing frames)', path, skipped, skipped + len(kept))
    if not kept:
      raise ValueError(f'{path}: no video to write')
    return kept

  def _split_generators(self, dl_manager):
    del dl_manager
    return {p: self._generate_examples(p) for p in self._phases}

  def _generate_examples(self, phase: str):
    records = self._entries[phase]
    packed = (packed_size(self._rgbd_config), self._quality) if self._packed else None
    paths = ({frames_key(s): [layouts.frame_path(self._layout, r.name, i, s) for i in range(r.frames)]
              for s in self._streams} for r in records)
    if packed is None or self._workers == 1:
      videos = (_read_frames(p, packed) for p in paths)
    else:  # decoding, resizing and encoding: worker processes (spawned: the caller may run JAX
      # threads), results in split-file order
      pool = concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context('spawn'))
      videos = pool.map(_read_frames, paths, itertools.repeat(packed), chunksize=4)
    try:
      for record, frames in zip(records, videos):
        yield record.row, {'name': record.name, 'label': record.label, 'num_frames': record.frames,
                           'row': record.row, **frames}
    finally:
      if packed is not None and self._workers > 1:
        pool.shutdown(cancel_futures=True)


def default_phases(config: ml_collections.ConfigDict) -> list[str]:
  """Every phase whose split file exists (a packed build: 'train' only)."""
  if config.dataset.packed:
    return ['train']
  phases = [p for p in ('train', 'valid') if os.path.isfile(splits.split_file(config, p))]
  if not phases:
    raise FileNotFoundError(f'no split file (train/valid) in {config.common.splits}')
  return phases


def prepare(config: ml_collections.ConfigDict, data_dir: str, phases: list[str] | None = None,
            quality: int | None = None, workers: int = 1) -> str:
  """Writes the build for `phases` (default: every split file present; packed: 'train'); returns its
  directory. `quality` and `workers` (processes that decode, resize and encode) apply to a packed
  build (`config.dataset.packed`)."""
  phases = phases or default_phases(config)
  builder = RgbdFrames(rgbd_config=config, phases=phases, quality=quality, workers=workers,
                       data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  return build_dir(config, data_dir, bool(config.dataset.packed))


def read_packed(path: str) -> dict | None:
  """{'size': [w, h], 'quality': q} of a packed build, None for a build of the original files."""
  packed = _open_builder(path).info.metadata.get('packed')
  return None if packed is None else dict(packed)


def read_entries(path: str, phase: str) -> list[tuple[splits.VideoRecord, int]]:
  """(record, position in the array_record split) for every video of a build's split."""
  builder = _open_builder(path)
  entries = builder.info.metadata.get('entries', {})
  if phase not in entries:
    raise ValueError(f'{path}: the TFDS build has no split {phase!r} (it has {sorted(entries)}); '
                     f'build it with scripts/prepare_tfds.py --phase {phase}')
  return [(splits.VideoRecord(str(n), int(f), int(l), int(r)), pos) for pos, (n, f, l, r) in enumerate(entries[phase])]


def open_split(path: str, phase: str):
  """Random access to a split's records (tfds data source over array_record)."""
  return _open_builder(path).as_data_source(split=phase)


def _open_builder(path: str):
  if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
    raise FileNotFoundError(f'no TFDS build at {path} (run scripts/prepare_tfds.py with the same config '
                            f'and --data-dir {os.path.dirname(os.path.dirname(os.path.dirname(path)))})')
  return tfds.builder_from_directory(path)
