"""Initial weights: `model.pretrained` (Orbax or PyTorch, heads skipped) and FusionNet from two streams."""

import flax
import numpy as np
import pytest

from rgbd_jax.convert import torch_export
from rgbd_jax.convert import torch_import
from rgbd_jax import checkpoint
from rgbd_jax.train import pretrained
from rgbd_jax.models import build


def _flat(tree):
  return {'/'.join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree).items()}


def _head(path):
  return 'mlp_head_' in path and '/1/' in path


@pytest.fixture()
def unimodal(tiny_config, random_variables):
  config = tiny_config()
  shapes = build.variable_shapes(config)
  return config, shapes, random_variables(shapes, seed=1), random_variables(shapes, seed=2)


@pytest.mark.parametrize('source', ['orbax', 'torch'])
def test_pretrained_skips_heads(unimodal, tmp_path, source):
  config, _, saved, fresh = unimodal
  if source == 'orbax':
    path = tmp_path / 'converted'
    checkpoint.save_variables(path, saved, config)
  else:
    path = tmp_path / 'model_best.pth.tar'
    torch_export.save_torch_checkpoint(str(path), torch_export.variables_to_state_dict(saved, config))
  config.model.pretrained = str(path)
  got = _flat(pretrained.initial_variables(config, fresh))
  want, init = _flat(saved), _flat(fresh)
  assert set(got) == set(want)
  heads = [p for p in got if _head(p)]
  assert len(heads) == 6  # kernel + bias of three branch heads
  for p in got:
    np.testing.assert_allclose(got[p], (init if _head(p) else want)[p], rtol=1e-6, err_msg=p)


def test_fusion_from_stream_checkpoints(tiny_config, random_variables, tmp_path):
  uni = tiny_config()
  uni_shapes = build.variable_shapes(uni)
  streams = {}
  for i, name in enumerate(('rgb', 'depth')):
    streams[name] = random_variables(uni_shapes, seed=10 + i)
    checkpoint.save_variables(tmp_path / name, streams[name], uni)
  fusion = tiny_config('FusionNet')
  fresh = random_variables(build.variable_shapes(fusion), seed=3)
  fusion.model.rgb_checkpoint = str(tmp_path / 'rgb')
  fusion.model.depth_checkpoint = str(tmp_path / 'depth')
  got = _flat(pretrained.initial_variables(fusion, fresh))
  init = _flat(fresh)
  for name, module in (('rgb', 'Modalit_rgb'), ('depth', 'Modalit_depth')):
    src = _flat(streams[name])
    n = 0
    for p, v in src.items():
      coll, rest = p.split('/', 1)
      target = f'{coll}/{module}/{rest}'
      if target in got:   # the streams have no classification heads
        np.testing.assert_allclose(got[target], v, rtol=1e-6, err_msg=target)
        n += 1
    assert n > 0.9 * len(src)
  # the fusion-only parts keep their initial values
  own = [p for p in got if '/Modalit_' not in p]
  assert own and all(np.array_equal(got[p], init[p]) for p in own)


def test_missing_pretrained_file_is_clear(unimodal, tmp_path):
  config, _, _, fresh = unimodal
  config.model.pretrained = str(tmp_path / 'nope.pth.tar')
  with pytest.raises(FileNotFoundError, match='nope.pth.tar'):
    pretrained.initial_variables(config, fresh)


@pytest.mark.parametrize('source', ['orbax', 'torch'])
def test_dsnv2_fine_tuning_skips_the_journal_heads(tiny_config, random_variables, tmp_path, caplog, source):
  # the journal's load_pretrained_checkpoint: dtn.multi_scale_transformers.{0,1,2}.3.2 (the heads'
  # Linears) stay as initialised; everything else, the heads' LayerNorms included, loads
  config = tiny_config('DSNV2', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4)
  shapes = build.variable_shapes(config)
  saved, fresh = random_variables(shapes, seed=1), random_variables(shapes, seed=2)
  state_dict = torch_export.variables_to_state_dict(saved, config)
  heads = sorted(k for k in state_dict if pretrained.JOURNAL_HEAD_PATTERN.match(k))
  assert heads == [f'dtn.multi_scale_transformers.{j}.3.2.{w}' for j in range(3) for w in ('bias', 'weight')]
  if source == 'orbax':
    path = tmp_path / 'converted'
    checkpoint.save_variables(path, saved, config)
  else:
    path = tmp_path / 'model_best.pth.tar'
    torch_export.save_torch_checkpoint(str(path), state_dict)
  config.model.pretrained = str(path)
  with caplog.at_level('INFO'):
    got = pretrained.initial_variables(config, fresh)
  assert 'classification layers not loaded (fine-tuning): ' + ', '.join(heads) in caplog.text
  got_sd = torch_export.variables_to_state_dict(got, config)
  fresh_sd = torch_export.variables_to_state_dict(fresh, config)
  assert set(got_sd) == set(state_dict)
  for k in state_dict:
    want = fresh_sd[k] if k in heads else state_dict[k]
    np.testing.assert_allclose(got_sd[k], want, rtol=1e-6, err_msg=k)
  # not a vacuous comparison: the heads' two sources differ, and so do the loaded layers'
  assert all(not np.allclose(state_dict[k], fresh_sd[k]) for k in heads)
  assert not np.allclose(state_dict['dtn.multi_scale_transformers.0.3.0.weight'],
                         fresh_sd['dtn.multi_scale_transformers.0.3.0.weight'])


def test_umdr_fusion_streams_keep_their_heads(tiny_config, random_variables, tmp_path):
  # train_fusion.py loads each stream whole: its classification heads give the stream's logits
  uni = tiny_config('DSNV2', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4)
  stream = random_variables(build.variable_shapes(uni), seed=5)
  path = tmp_path / 'rgb.pth.tar'
  torch_export.save_torch_checkpoint(str(path), torch_export.variables_to_state_dict(stream, uni))
  fusion = tiny_config('UMDRFusion', N=1, sms_depth=1, sample_duration=8, intar_fatcer=4)
  fresh = random_variables(build.variable_shapes(fusion), seed=6)
  fusion.model.rgb_checkpoint = str(path)
  got, init = _flat(pretrained.initial_variables(fusion, fresh)), _flat(fresh)
  src = _flat(stream)
  heads = [p for p in src if p.startswith('params/dtn/multi_scale_transformers/') and '/3/2/' in p]
  assert len(heads) == 6
  for p, v in src.items():
    coll, rest = p.split('/', 1)
    target = f'{coll}/Modalit_rgb/{rest}'
    np.testing.assert_allclose(got[target], v, rtol=1e-6, err_msg=p)
    if p in heads:
      assert not np.allclose(init[target], v), p
