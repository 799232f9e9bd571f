"""The on-device (JAX) normalisation and FRP heatmap against the host's NumPy/OpenCV ones and the
original's golden heatmaps (tests/golden/data_ntu_eval.npz, w = 10)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgbd_jax.data import clips
from rgbd_jax.data import dynamic_image
from rgbd_jax.data import on_device
from rgbd_jax.data import transforms

GOLDEN = pathlib.Path(__file__).resolve().parent / 'golden' / 'data_ntu_eval.npz'
TOL = 1e-3  # relative L2 error, float32 (the data fixture's rule)

_heatmap = jax.jit(on_device.heatmap, static_argnums=1)


def rel_err(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  norm = np.linalg.norm(ref)
  return np.linalg.norm(ours - ref) / norm if norm > 0 else np.linalg.norm(ours)


def host(batch_u8, w):
  """The host function per clip, stacked to the on-device layout (B, T, H, W, 1)."""
  return np.stack([dynamic_image.heatmap(np.ascontiguousarray(c), w) for c in batch_u8])[..., None]


@pytest.mark.parametrize('shape', [(2, 12, 9, 7), (3, 6, 5, 5), (1, 16, 12, 16)])
@pytest.mark.parametrize('w', [1, 2, 4, 10])
def test_matches_host_on_random_clips(shape, w):
  x = np.random.default_rng([*shape, w]).integers(0, 256, shape + (3,), dtype=np.uint8)
  ours = np.asarray(_heatmap(x, w))
  ref = host(x, w)
  assert ours.shape == ref.shape == shape + (1,) and ours.dtype == np.float32
  assert rel_err(ours, ref) <= TOL, rel_err(ours, ref)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
  if shape[1] >= w > 1:
    assert np.abs(ref).max() > 0  # not a vacuous comparison
  np.testing.assert_array_equal(ours[:, :w - 1], 0)


@pytest.mark.parametrize('t, w', [(3, 4), (9, 10), (1, 2)])
def test_clip_shorter_than_window_is_zero(t, w):
  x = np.random.default_rng(t).integers(0, 256, (2, t, 5, 6, 3), dtype=np.uint8)
  ours = np.asarray(_heatmap(x, w))
  assert ours.shape == (2, t, 5, 6, 1)
  np.testing.assert_array_equal(ours, 0)
  np.testing.assert_array_equal(host(x, w), 0)


def test_constant_and_uniformly_changing_clips_are_zero():
  # Constant clip: every window map is 0. A uniform colour change per frame: every window map is
  # constant over the image, so every pixel ties with the mean (and the static map is constant).
  const = np.full((1, 8, 6, 7, 3), 77, np.uint8)
  ramp = np.zeros((1, 8, 6, 7, 3), np.uint8)
  ramp[0] = np.random.default_rng(0).integers(0, 256, (8, 1, 1, 3), dtype=np.uint8)
  for x in (const, ramp):
    for w in (2, 4):
      np.testing.assert_array_equal(np.asarray(_heatmap(x, w)), 0)
      np.testing.assert_array_equal(host(x, w), 0)


def _tie_clip(seed):
  """Two frames whose window map (w = 2) is `c` on most pixels and `c + e` / `c - e` on as many
  pixels each: the map's exact mean is the grey value of `c`, a tie on most pixels."""
  rng = np.random.default_rng(seed)
  h, wd = 8, 9
  c = rng.integers(20, 100, 3)
  diff = np.tile(c, (h * wd, 1))
  pairs = rng.integers(1, h * wd // 4 + 1)
  where = rng.permutation(h * wd)[:2 * pairs]
  e = rng.integers(1, 20, (pairs, 3))
  diff[where[:pairs]] += e
  diff[where[pairs:]] -= e
  base = rng.integers(0, 100, (h, wd, 3))
  return np.stack([base, base + diff.reshape(h, wd, 3)]).astype(np.uint8)[None], c


def _host_mean_is_exact(x, c):
  """Whether the host's float32 mean of the grey map equals the tie pixels' grey value exactly
  (otherwise its last bit decides whether the tie pixels count as above the mean)."""
  import cv2  # pylint: disable=import-outside-toplevel
  p = np.maximum(x[0, 1].astype(np.int32) - x[0, 0], 0).astype(np.float32)
  lo, hi = p.min(), p.max()
  grey = cv2.transform(p.reshape(-1, 1, 3), dynamic_image.GRAY.reshape(1, 3)).reshape(p.shape[:2])
  grey = (grey - lo * dynamic_image.GRAY.sum()) * (np.float32(1) / np.float32(hi - lo))
  tie = grey[(p == c).all(-1)][0]
  return grey.mean() == tie


def test_ties_at_the_threshold():
  """Pixels exactly at the mean are not above it. The on-device mean is taken from exact integer
  channel sums, so the tie compares equal bit for bit; the host's float32 mean can be off by an
  ulp either way, so parity is asserted where the host's mean is exact."""
  cases = [_tie_clip(seed) for seed in range(40)]
  batch = np.concatenate([x for x, _ in cases])
  heat = np.asarray(_heatmap(batch, 2))  # one compilation for all cases
  agreed = 0
  for seed, (x, c) in enumerate(cases):
    ours = heat[seed, 1, ..., 0]
    tie = (x[0, 1].astype(np.int32) - x[0, 0] == c).all(-1)
    assert tie.mean() >= 0.5
    # Tie pixels are not in the static map before morphology; after erode/dilate a tie pixel can
    # only be non-zero next to a pixel above the mean, so a tie pixel with no such neighbour is 0.
    grey_order = (x[0, 1].astype(np.int32) - x[0, 0]) @ np.array([2989, 5870, 1140])
    above = grey_order > grey_order[tie][0]
    near = np.zeros((tie.shape[0] + 2, tie.shape[1] + 2), bool)
    for di in range(3):
      for dj in range(3):
        near[di:di + tie.shape[0], dj:dj + tie.shape[1]] |= above
    near = near[1:-1, 1:-1]
    assert (ours[tie & ~near] == 0).all()
    if _host_mean_is_exact(x, c):
      agreed += 1
      ref = host(x, 2)[0, 1, ..., 0]
      assert rel_err(ours, ref) <= TOL, (seed, rel_err(ours, ref))
  assert agreed >= 5


def _golden_clips():
  with np.load(GOLDEN) as z:
    for modality in ('rgb', 'depth'):
      i = 0
      while f'{modality}/{i}/clip_u8' in z.files:
        clip = np.ascontiguousarray(z[f'{modality}/{i}/clip_u8'].transpose(1, 2, 3, 0))  # (T, S, S, 3)
        yield modality, i, clip, z[f'{modality}/{i}/heatmap'][0]  # (T, S, S)
        i += 1


def test_matches_golden_and_host_on_golden_clips():
  w = 10  # tests/golden/data_ntu_eval.json
  found = list(_golden_clips())
  assert len(found) == 4
  batch = np.stack([clip for _, _, clip, _ in found])
  ours = np.asarray(_heatmap(batch, w))[..., 0]  # all four clips as one batch
  errors = {}
  for b, (modality, i, clip, golden) in enumerate(found):
    ref = dynamic_image.heatmap(clip, w)
    errors[modality, i] = rel_err(ours[b], golden), rel_err(ours[b], ref)
    assert np.linalg.norm(golden) > 0
    assert errors[modality, i][0] <= TOL and errors[modality, i][1] <= TOL, errors
  print('relative L2 error (vs golden, vs host):', errors)


def test_normalise_equals_host():
  x = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)
  x[0, 0, 0, :4, 0] = (0, 127, 128, 255)
  ours = np.asarray(jax.jit(on_device.normalise)(x))
  assert ours.dtype == np.float32
  np.testing.assert_array_equal(ours, np.stack([transforms.normalise(c) for c in x]))
  bf16 = jax.jit(on_device.normalise, static_argnums=1)(x, jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(bf16), np.asarray(jnp.asarray(ours).astype(jnp.bfloat16)))


def test_jits_once_per_shape_and_vectorises_over_batch():
  traces = []

  @jax.jit
  def step(x):
    traces.append(x.shape)
    return on_device.heatmap(x, 4)

  rng = np.random.default_rng(1)
  a = rng.integers(0, 256, (3, 7, 6, 5, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (3, 7, 6, 5, 3), dtype=np.uint8)
  c = rng.integers(0, 256, (2, 9, 6, 5, 3), dtype=np.uint8)
  out_a, out_b = step(a), step(b)
  step(c)
  step(c)
  assert traces == [a.shape, c.shape]
  traces.clear()
  np.testing.assert_allclose(np.asarray(out_a), host(a, 4), rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out_b), host(b, 4), rtol=0, atol=1e-5)
  # Each clip of the batch on its own gives the same as in the batch.
  for i in range(3):
    np.testing.assert_allclose(np.asarray(step(a[i:i + 1]))[0], np.asarray(out_a)[i], rtol=0, atol=1e-6)


def test_rejects_bad_input():
  with pytest.raises(ValueError):
    on_device.heatmap(np.zeros((1, 4, 3, 3, 3), np.float32), 2)
  with pytest.raises(ValueError):
    on_device.heatmap(np.zeros((4, 3, 3, 3), np.uint8), 2)
  with pytest.raises(ValueError):
    on_device.heatmap(np.zeros((1, 4, 3, 3, 3), np.uint8), 0)
  with pytest.raises(ValueError):
    on_device.normalise(np.zeros((1, 4, 3, 3, 3), np.float32))


@pytest.mark.parametrize('fusion', [False, True])
def test_model_inputs(fusion):
  keys = clips.FUSION_KEYS if fusion else clips.UNIMODAL_KEYS
  rng = np.random.default_rng(2)
  pairs = list(dict.fromkeys(keys.values()))
  batch = {'label': np.arange(2, dtype=np.int32), 'mask': np.array([True, False]),
           'index': np.array([5, -1], np.int32)}
  for clip_key, _ in pairs:
    batch[clip_key] = rng.integers(0, 256, (2, 6, 5, 4, 3), dtype=np.uint8)

  out = jax.jit(lambda b: on_device.model_inputs(b, keys, 3, jnp.bfloat16))(batch)
  assert sorted(out) == sorted(list(batch) + [h for _, h in pairs])
  for k in ('label', 'mask', 'index'):
    np.testing.assert_array_equal(np.asarray(out[k]), batch[k])
  for clip_key, heat_key in pairs:
    assert out[clip_key].dtype == jnp.bfloat16 and out[heat_key].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out[clip_key].astype(jnp.float32)),
                                  np.asarray(on_device.normalise(batch[clip_key], jnp.bfloat16).astype(jnp.float32)))
    np.testing.assert_allclose(np.asarray(out[heat_key]), host(batch[clip_key], 3), rtol=0, atol=1e-5)

  same = on_device.model_inputs_for(batch, fusion, 3)
  for clip_key, heat_key in pairs:
    np.testing.assert_array_equal(np.asarray(same[clip_key]),
                                  np.stack([transforms.normalise(c) for c in batch[clip_key]]))
    np.testing.assert_allclose(np.asarray(same[heat_key]), np.asarray(out[heat_key]), rtol=0, atol=1e-6)
  with pytest.raises(KeyError):
    on_device.model_inputs({'label': batch['label']}, keys, 3)
