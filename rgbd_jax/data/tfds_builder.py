"""A TensorFlow-free TFDS build of a dataset's videos: array_record shards, one record per video.

Each record keeps every frame file's original encoded bytes (no re-encoding,
so decoding gives exactly the pixels the folders give), with the video's name,
label, frame count and its entry row in the split file. Records are written in
split-file order (shuffling disabled). The entry list of each split is also
stored in the build's metadata, so the loader knows every video without
reading any frames.

    <data_dir>/rgbd_frames/<dataset>_<splits>_<streams>/1.0.0/
        rgbd_frames-<phase>.array_record-000NN-of-000MM, dataset_info.json, features.json, metadata.json
"""

from __future__ import annotations

import logging
import os
import re

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from rgbd_jax.data import layouts
from rgbd_jax.data import sources
from rgbd_jax.data import splits

NAME = 'rgbd_frames'
VERSION = '1.0.0'


def config_name(config: ml_collections.ConfigDict) -> str:
  """e.g. 'ntu_cs_rgb' for NTU, splits .../@CS, RGB; 'ntu_cs_rgb_depth' for the fusion network."""
  split_name = os.path.basename(os.path.normpath(config.common.splits)) or 'splits'
  text = '_'.join([config.common.dataset, split_name, *layouts.streams(config)])
  return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def build_dir(config: ml_collections.ConfigDict, data_dir: str | None = None) -> str:
  return os.path.join(data_dir or config.common.tfds_data_dir, NAME, config_name(config), VERSION)


class RgbdFrames(tfds.core.GeneratorBasedBuilder):
  """Videos of one dataset, split protocol and stream set, as encoded frame bytes."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'Frames as the original files, split-file order.'}

  def __init__(self, *, rgbd_config: ml_collections.ConfigDict, phases: list[str], **kwargs):
    self._rgbd_config = rgbd_config
    self._phases = list(phases)
    self._streams = layouts.streams(rgbd_config)
    self._layout = layouts.layout(rgbd_config)
    self._entries = {p: self._check(p) for p in self._phases}
    kwargs.setdefault('config', tfds.core.BuilderConfig(name=config_name(rgbd_config)))
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    frames = {sources.tfds_builder_key(s): tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
              for s in self._streams}
    metadata = tfds.core.MetadataDict()
    metadata['entries'] = {p: [[r.name, r.frames, r.label, r.row] for r in e] for p, e in self._entries.items()}
    metadata['streams'] = list(self._streams)
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'{self._rgbd_config.common.dataset} videos as encoded frame files '
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
    for record in self._entries[phase]:
      example = {'name': record.name, 'label': record.label, 'num_frames': record.frames, 'row': record.row}
      for stream in self._streams:
        frames = []
        for i in range(record.frames):
          with open(layouts.frame_path(self._layout, record.name, i, stream), 'rb') as f:
            frames.append(f.read())
        example[sources.tfds_builder_key(stream)] = frames
      yield record.row, example


def default_phases(config: ml_collections.ConfigDict) -> list[str]:
  """Every phase whose split file exists."""
  phases = [p for p in ('train', 'valid') if os.path.isfile(splits.split_file(config, p))]
  if not phases:
    raise FileNotFoundError(f'no split file (train/valid) in {config.common.splits}')
  return phases


def prepare(config: ml_collections.ConfigDict, data_dir: str, phases: list[str] | None = None) -> str:
  """Writes the build for `phases` (default: every split file present); returns its directory."""
  phases = phases or default_phases(config)
  builder = RgbdFrames(rgbd_config=config, phases=phases, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare()
  return build_dir(config, data_dir)


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
