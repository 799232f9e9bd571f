"""The crosscheck command on a journal checkpoint: the video alone as input, the training step through NetworkKind.

The step itself was compared once with the original's train.py step (its DSNNetV2 at full width,
T=16, 32x32, B=2, float64, segment-centre frames, dropout off): losses, all 415 parameter gradients
and all 114 BatchNorm running statistics agreed within 2e-13 relative. This test keeps the path
working on a tiny network.
"""

import numpy as np

from conftest import load_config_file, make_random_variables, make_tiny_config
from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_layout
from rgbd_jax.models import build
from rgbd_jax.tools import crosscheck


def test_crosscheck_train_step_on_a_dsnv2_checkpoint(tmp_path, caplog):
  # one SMS stage and one Transformer layer: the path, at a third of the compile time
  tiny = make_tiny_config('DSNV2', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4)
  variables = make_random_variables(build.variable_shapes(tiny), seed=4)
  state_dict = torch_export.variables_to_state_dict(variables, tiny)
  state_dict = {k: (np.abs(v) if k.endswith('running_var') else 0.3 * v) for k, v in state_dict.items()}
  torch_export.save_torch_checkpoint(str(tmp_path / 'm.pth.tar'), state_dict, epoch=11)
  rng = np.random.default_rng(0)
  np.savez(tmp_path / 'in.npz', video=rng.normal(size=(2, 3, 8, 32, 32)).astype(np.float32),
           target=np.array([1, 3]))
  config = load_config_file('configs/umdr_ntu.py')
  config.model.dim_head = 16
  code = crosscheck.main(config, str(tmp_path / 'm.pth.tar'), str(tmp_path / 'in.npz'), str(tmp_path / 'out.npz'),
                         epoch=10, x64=True, mode='train_step',
                         keys=['SMS_layers.1.q.weight', 'dtn.cls_tokens.0.pos_embedding'])
  assert code == 0
  assert 'checkpoint overrides model.sample_duration: 32 -> 8' in caplog.text
  assert 'checkpoint overrides model.sms_depth: 3 -> 1' in caplog.text
  with np.load(tmp_path / 'out.npz') as z:
    out = {k: z[k] for k in z.files}
  params = [e.key for e in torch_layout.original_entries(tiny) if e.kind not in ('stat', 'count')]
  assert {f'grad_norm/{k}' for k in params} <= set(out)
  assert out['logits'].shape == (2, 5) and out['grad/SMS_layers.1.q.weight'].shape == (128, 8)
  assert out['distillation_loss'] > 0
  # umdr_ntu.py: distill 0.2 (on at epoch 10), loss weights 1, .5, .5, .5
  assert abs(out['total_loss'] - out['ce_loss'] - 0.2 * out['distillation_loss']) < 1e-9
  assert all(np.isfinite(v).all() for v in out.values())
