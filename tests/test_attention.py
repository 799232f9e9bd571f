"""kNN attention and the Transformer layer against a torch reference written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgbd_jax.models.attention import Attention, TransformerLayer, knn_keep, knn_mask


@pytest.mark.parametrize('n,ratio', [(17, 0.7), (33, 0.7), (49, 0.7), (5, 0.5), (8, 1.0)])
def test_knn_mask_keeps_exactly_k_per_row_as_torch_topk(n, ratio):
  rng = np.random.default_rng(n)
  dots = rng.normal(size=(2, 3, n, n)).astype(np.float32)
  k = knn_keep(n, ratio)
  assert k == int(n * ratio)
  mask = np.asarray(knn_mask(jnp.asarray(dots), k))
  assert (mask.sum(-1) == k).all()
  t = torch.tensor(dots)
  ref = torch.zeros_like(t).scatter_(-1, torch.topk(t, k=k, dim=-1, largest=True)[1], 1.0).numpy() > 0
  np.testing.assert_array_equal(mask, ref)


def test_knn_mask_with_ties_still_keeps_k():
  dots = jnp.zeros((1, 1, 4, 6))  # every score tied
  assert (np.asarray(knn_mask(dots, 3)).sum(-1) == 3).all()


def _torch_layer(x, p, heads, dim_head, knn):
  """Pre-norm layer as SPEC describes: kNN top-k attention, exact GELU, LayerNorm eps 1e-5."""
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  b, n, d = x.shape
  a, f = p['0'], p['1']
  h = F.layer_norm(x, (d,), t(a['norm']['scale']), t(a['norm']['bias']), 1e-5)
  qkv = h @ t(a['fn']['to_qkv']['kernel'])
  q, k, v = (z.reshape(b, n, heads, dim_head).permute(0, 2, 1, 3) for z in qkv.chunk(3, dim=-1))
  dots = q @ k.transpose(-1, -2) * dim_head ** -0.5
  if knn:
    mask = torch.zeros_like(dots).scatter_(-1, torch.topk(dots, k=int(n * knn), dim=-1)[1], 1.0)
    dots = torch.where(mask > 0, dots, torch.full_like(dots, float('-inf')))
  out = (dots.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(b, n, heads * dim_head)
  x = out @ t(a['fn']['to_out']['0']['kernel']) + t(a['fn']['to_out']['0']['bias']) + x
  h = F.layer_norm(x, (d,), t(f['norm']['scale']), t(f['norm']['bias']), 1e-5)
  h = F.gelu(h @ t(f['fn']['fc1']['kernel']) + t(f['fn']['fc1']['bias']))
  return h @ t(f['fn']['fc2']['kernel']) + t(f['fn']['fc2']['bias']) + x


@pytest.mark.parametrize('knn', [0.7, 0.0])
def test_transformer_layer_matches_torch_reference(knn):
  dim, heads, dim_head, n = 16, 2, 8, 9
  x = np.random.default_rng(0).normal(size=(1, n, dim))
  with jax.enable_x64(True):
    layer = TransformerLayer(dim, heads, dim_head, mlp_dim=24, dropout=0.1, knn_attention=knn,
                             dtype=jnp.float64, param_dtype=jnp.float64)
    variables = layer.init(jax.random.PRNGKey(0), jnp.asarray(x), False)
    # non-trivial LayerNorm affine so the test can see it
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape, a.dtype),
                                    variables['params'])
    y = np.asarray(layer.apply({'params': params}, jnp.asarray(x), False))
  ref = _torch_layer(torch.tensor(x), params, heads, dim_head, knn).numpy()
  np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_attention_dropout_only_in_training():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 16))
  attn = Attention(16, heads=2, dim_head=8, dropout=0.5)
  v = attn.init(jax.random.PRNGKey(1), x, False)
  a = attn.apply(v, x, False)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(attn.apply(v, x, False)))
  b = attn.apply(v, x, True, rngs={'dropout': jax.random.PRNGKey(2)})
  c = attn.apply(v, x, True, rngs={'dropout': jax.random.PRNGKey(3)})
  assert not np.allclose(np.asarray(b), np.asarray(c))
  assert np.isclose(float(jnp.mean(b == 0)), 0.5, atol=0.1)  # the output Linear's dropout
