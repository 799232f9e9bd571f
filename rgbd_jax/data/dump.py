"""Evaluation clips written to an .npz in the original's layout, to compare preprocessing.

    video    (N, 3, T, S, S) float32  (u8 - 127.5) / 128
    heatmap  (N, 1, T, S, S) float32
    label    (N,) int64, indices (N, T) int64 (0-based frame indices), name (N,) str
    (the fusion network adds depth (N, 3, T, S, S) and depth_heatmap (N, 1, T, S, S))

Videos come in split-file order (those with more than 16 frames, as the original).
The host gives the uint8 clips; normalisation and heatmap come from
`on_device.model_inputs`, the code the training and evaluation steps run (jitted, one clip
at a time, in float32).
"""

from __future__ import annotations

import logging

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from rgbd_jax.data import clips
from rgbd_jax.data import layouts
from rgbd_jax.data import on_device


@functools.partial(jax.jit, static_argnums=1)
def _clip_and_heatmap(clip_u8: jax.Array, w: int) -> tuple[jax.Array, jax.Array]:
  """(T, S, S, 3) uint8 -> normalised clip (T, S, S, 3), heatmap (T, S, S, 1), float32."""
  out = on_device.model_inputs({'video': clip_u8[None]}, clips.UNIMODAL_KEYS, w, jnp.float32)
  return out['video'][0], out['heatmap'][0]


def collect(config: ml_collections.ConfigDict, phase: str, limit: int | None = None,
            progress: bool = True) -> dict[str, np.ndarray]:
  loader = clips.ClipLoader(config, phase)
  count = len(loader) if limit is None else min(limit, len(loader))
  fusion = layouts.is_fusion(config)
  rows, skipped = [], 0
  for i in tqdm.trange(count, desc=f'{phase} clips', unit='clip', disable=not progress):
    try:
      raw = loader.load_u8(i)
    except (FileNotFoundError, ValueError) as e:
      if not config.dataset.skip_bad_videos:
        raise
      skipped += 1
      logging.warning('skipping video %r: %s', loader.source.records[i].name, e)
      continue
    row = {'label': raw['label'], 'indices': raw['indices'], 'name': raw['name']}
    for stream in loader.streams:
      prefix = stream if fusion and stream == 'depth' else 'video'
      video, heat = (np.asarray(a) for a in _clip_and_heatmap(raw[stream], int(config.model.w)))
      row[prefix] = video.transpose(3, 0, 1, 2)  # NCTHW, the interchange layout
      row['heatmap' if prefix == 'video' else 'depth_heatmap'] = heat.transpose(3, 0, 1, 2)
    rows.append(row)
  if skipped:
    logging.warning('%d of %d videos skipped (dataset.skip_bad_videos)', skipped, count)
  if not rows:
    raise ValueError(f'no clip to write ({count} videos requested, {skipped} skipped)')
  out = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != 'name'}
  out['label'] = out['label'].astype(np.int64)
  out['indices'] = out['indices'].astype(np.int64)
  out['name'] = np.array([r['name'] for r in rows])
  return out


def dump_clips(config: ml_collections.ConfigDict, phase: str, out_path: str, limit: int | None = None) -> dict:
  arrays = collect(config, phase, limit)
  np.savez(out_path, **arrays)
  return arrays
