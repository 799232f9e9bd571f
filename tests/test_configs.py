"""Config files: they load, they hold the original YAML files' values, and command-line overrides work."""

import pathlib
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from rgbd_jax import configs

REPO = pathlib.Path(__file__).resolve().parent.parent
YAML_DIR = REPO / 'tests' / 'data' / 'original_yaml'  # copies of the original's config/*.yml
PAIRS = {'ntu.py': 'NTU.yml', 'nvgesture.py': 'NvGesture.yml', 'isogd.py': 'IsoGD.yml',
         'thu_read.py': 'THU.yml', 'jester.py': 'Jester.yml'}
# Machine-specific paths of the authors' cluster: ours hold placeholders instead.
PATH_KEYS = {'common.data', 'common.splits', 'model.pretrained', 'model.rgb_checkpoint', 'model.depth_checkpoint'}
# Keys of the original's YAML files that change nothing in this port: from_yaml keeps them under `inert`.
INERT = {'common.visdom', 'common.dist', 'common.vis_feature', 'common.DEBUG', 'model.SYNC_BN', 'common.init_epochs',
         'common.resume_scheduler', 'model.resumelr', 'common.mse_weight', 'common.metric_freq',
         'common.show_cluster_result', 'common.visname'}


def _leaves(c, prefix=''):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _leaves(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def _get(c, dotted):
  for part in dotted.split('.'):
    c = c[part]
  return c


def _parse(argv, monkeypatch):
  # config_flags reads the overrides from sys.argv, as a script's would be.
  monkeypatch.setattr(sys, 'argv', argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv, lock_config=False)
  fv(argv)
  return fv.config


def _load(path, monkeypatch):
  return _parse(['prog', f'--config={path}'], monkeypatch)


@pytest.mark.parametrize('path', sorted((REPO / 'configs').glob('*.py')), ids=lambda p: p.name)
def test_every_config_file_loads(path, monkeypatch):
  config = _load(path, monkeypatch)
  assert set(config) >= {'common', 'model', 'dataset'}
  assert configs.num_classes(config) > 0
  base = dict(_leaves(configs.base_config()))
  assert set(base) <= set(dict(_leaves(config)))  # nothing dropped from the base config


@pytest.mark.parametrize('ours,yml', sorted(PAIRS.items()))
def test_config_holds_the_original_yaml_values(ours, yml, monkeypatch):
  original = configs.from_yaml(str(YAML_DIR / yml))
  config = _load(REPO / 'configs' / ours, monkeypatch)
  base = dict(_leaves(configs.base_config()))
  values = dict(_leaves(original))
  inert = {k[len('inert.'):] for k in values if k.startswith('inert.')}
  assert {'.'.join(k.split('.')[:2]) for k in inert} <= INERT, f'{yml}: unexpected inert keys {sorted(inert)}'
  values = {k: v for k, v in values.items() if not k.startswith('inert.')}
  compared = 0
  for key, value in values.items():
    if key in PATH_KEYS:
      continue
    assert key in base, f'{yml}: {key} is not in the base config'
    assert _get(config, key) == value, f'{ours}: {key} = {_get(config, key)!r}, {yml} says {value!r}'
    compared += 1
  assert compared > 40


def test_overrides_through_the_scripts_flags(monkeypatch):
  c = _parse(['prog', '--config', str(REPO / 'configs' / 'ntu.py'), '--config.model.knn_attention=0.8',
              '--config.model.N=4', '--config.common.dataset=NvGesture', '--config.dataset.angle=(-5, 5)'],
             monkeypatch)
  assert c.model.knn_attention == 0.8 and c.model.N == 4 and c.common.dataset == 'NvGesture'
  assert tuple(c.dataset.angle) == (-5, 5)
  assert configs.num_classes(c) == 25
  with pytest.raises(flags.IllegalFlagValueError):
    _parse(['prog', '--config', str(REPO / 'configs' / 'ntu.py'), '--config.model.N=many'], monkeypatch)


def test_inert_yaml_keys_warn_and_change_nothing(tmp_path, caplog):
  path = tmp_path / 'x.yml'
  path.write_text('common:\n  visdom:\n    enable: True\n  mse_weight: 10.0\n  epochs: 7\nmodel:\n  SYNC_BN: 1\n')
  config = configs.from_yaml(str(path))
  assert config.common.epochs == 7
  assert config.inert.common.mse_weight == 10.0 and config.inert.model.SYNC_BN == 1
  assert 'mse_weight' not in config.common and 'visdom' not in config.common
  assert 'common.mse_weight has no effect' in caplog.text
  # a saved config keeps them, still inert
  again = configs.from_json(configs.to_json(config))
  assert again.inert.common.mse_weight == 10.0 and again.common.epochs == 7


def test_json_round_trip_and_type_errors_name_the_key():
  config = configs.base_config()
  config.dataset.angle = (-5, 5)
  config.common.learning_rate = 0.5
  again = configs.from_json(configs.to_json(config))
  assert again.dataset.angle == (-5, 5) and isinstance(again.dataset.angle, tuple)
  assert again.common.learning_rate == 0.5
  with pytest.raises(ValueError, match=r'model\.N'):
    configs.from_json('{"model": {"N": "six"}}', 'somewhere/config.json')


def test_labelsmooth_false_is_plain_cross_entropy():
  config = configs.base_config()
  assert configs.label_smoothing(config) == 0.1
  config.common.loss.labelsmooth = False
  assert configs.label_smoothing(config) == 0.0
