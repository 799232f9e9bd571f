"""RCM (recoupling) against a torch reference written from SPEC.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgbd_jax.models.rcm import RCM

FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _torch_rcm(tokens, p, heads, dim_head):
  """SPEC: X = tokens^T (B, C, T); xd from the channel mean; y from the query-averaged q k^T."""
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  x = tokens.permute(0, 2, 1)                                   # (B, C, T)
  b, c, frames = x.shape
  v = x.mean(dim=1)                                             # mean over C -> (B, T)
  pr = p['project']
  h = F.gelu(v @ t(pr['0']['kernel']))
  h = F.layer_norm(h @ t(pr['2']['kernel']), (frames,), t(pr['3']['scale']), t(pr['3']['bias']), 1e-5)
  xd = torch.sigmoid(h)                                          # (B, T)
  q = (x @ t(p['q']['kernel'])).reshape(b, c, heads, dim_head).permute(0, 2, 1, 3)
  k = (x @ t(p['k']['kernel'])).reshape(b, c, heads, dim_head).permute(0, 2, 1, 3)
  dots = (q @ k.transpose(-1, -2)) / dim_head ** 0.5             # (B, h, C, C)
  dots = dots.mean(dim=2)                                        # over the query axis
  if heads > 1:
    m = p['mergefc']
    dots = dots.reshape(b, heads * c) @ t(m['1']['kernel'])
    dots = F.layer_norm(dots, (c,), t(m['2']['scale']), t(m['2']['bias']), 1e-5)
  else:
    dots = dots[:, 0]
  y = torch.sigmoid(dots)                                        # (B, C)
  out = x * torch.einsum('bt,bc->bct', xd, y)
  sw = xd @ t(p['linear']['kernel']) + t(p['linear']['bias'])
  return out.permute(0, 2, 1), sw


@pytest.mark.parametrize('heads,hidden,batch', [(1, 256, 2), (2, 128, 3), (1, 32, 1), (3, 16, 2)])
def test_rcm_matches_torch_reference(heads, hidden, batch):
  dim, frames, dim_head = 24, 16, 64
  x = np.random.default_rng(heads).normal(size=(batch, frames, dim))
  with jax.enable_x64(True):
    rcm = RCM(dim, frames, heads, hidden, dim_head, dropout=0.4, dtype=jnp.float64, param_dtype=jnp.float64)
    variables = rcm.init(jax.random.PRNGKey(0), jnp.asarray(x), False)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape, a.dtype),
                                    variables['params'])
    assert params['project']['0']['kernel'].shape == (frames, hidden)
    assert ('mergefc' in params) == (heads > 1)
    out, sw = jax.jit(lambda p, a: rcm.apply({'params': p}, a, False), compiler_options=FAST_COMPILE)(
        params, jnp.asarray(x))
  ref_out, ref_sw = _torch_rcm(torch.tensor(x), params, heads, dim_head)
  np.testing.assert_allclose(np.asarray(out), ref_out.numpy(), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(np.asarray(sw), ref_sw.numpy(), rtol=1e-10, atol=1e-12)


def test_rcm_rejects_other_frame_counts():
  rcm = RCM(8, 16, 1, 32)
  variables = rcm.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 8)), False)
  with pytest.raises(ValueError, match='T=16'):
    rcm.apply(variables, jnp.zeros((1, 12, 8)), False)
