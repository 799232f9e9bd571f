"""configs/umdr_*.py hold the journal's YAML values (tests/data/original_yaml_umdr: copies of its config/*.yml)."""

import pytest
import yaml

from conftest import REPO, load_config_file
from rgbd_jax import configs

YAML_DIR = REPO / 'tests' / 'data' / 'original_yaml_umdr'
PAIRS = {'umdr_ntu.py': 'NTU.yml', 'umdr_nvgesture.py': 'NvGesture.yml', 'umdr_isogd.py': 'IsoGD.yml',
         'umdr_thu_read.py': 'THU.yml'}
# The journal's train.py builds its schedule with timm from --sched / --warmup-epochs: the YAML's
# `scheduler` section is never read there.
NOT_READ = {'common.scheduler.name', 'common.scheduler.patience', 'common.scheduler.warm_up_epochs'}


def _leaves(d, prefix=''):
  for k, v in d.items():
    if hasattr(v, 'items'):
      yield from _leaves(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def _yaml_keys(path) -> set[str]:
  """Our 'section.key' names of the keys the YAML file sets (its sections are one flat namespace)."""
  base = configs.base_config()
  home = {k: s for s in configs.SECTIONS for k in base[s]}
  raw = yaml.safe_load(path.read_text())
  return {f'{home[k]}.{k}' for entries in raw.values() for k in entries if k in home}


@pytest.mark.parametrize('ours,yml', sorted(PAIRS.items()))
def test_umdr_config_holds_the_journal_yaml_values(ours, yml):
  original = dict(_leaves(configs.from_yaml(str(YAML_DIR / yml))))
  in_file = _yaml_keys(YAML_DIR / yml)
  base = dict(_leaves(configs.base_config()))
  for arg in (None, 'fusion'):
    config = dict(_leaves(load_config_file(f'configs/{ours}', arg)))
    compared = 0
    for key, value in original.items():
      if key.rsplit('.', 1)[0] not in in_file and key not in in_file:
        continue
      if key in NOT_READ or key.startswith('inert.'):
        continue
      expected = 'UMDRFusion' if key == 'model.Network' and arg else value
      assert config[key] == expected, f'{ours}:{arg}: {key} = {config[key]!r}, {yml} says {expected!r}'
      compared += 1
    assert compared >= 14 and set(base) <= set(config)
  assert original['inert.model.rgb_checkpoint.cs32'].endswith(('model_best.pth.tar', '.pth.tar-per-iso', '.pth.tar '))
  assert configs.label_smoothing(load_config_file(f'configs/{ours}')) == 0.1


@pytest.mark.parametrize('ours', sorted(PAIRS))
def test_umdr_configs_train_with_the_journals_recipe(ours):
  from rgbd_jax.train import mixing  # pylint: disable=g-import-not-at-top
  from rgbd_jax.train import optim  # pylint: disable=g-import-not-at-top
  for arg in (None, 'fusion'):
    config = load_config_file(f'configs/{ours}', arg)
    # ShuffleMix+ for both (the README's command lines of train.py and train_fusion.py)
    assert mixing.enabled(config), (ours, arg)
    assert (config.common.mixup, config.common.shufflemix, config.common.smprob) == (0.8, 0.3, 0.2)
    assert config.common.opt == 'sgd' and not optim.uses_plateau(config)
    assert optim.timm_epoch_rates(config)[0] == config.common.warmup_lr
