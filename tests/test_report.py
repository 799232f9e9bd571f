"""Training plots: a loss term per axis, the epoch where distillation starts, class names on the
confusion matrix; and the pictures of rgbd_jax.train.visualize drawn from given maps."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from rgbd_jax import checkpoint
from rgbd_jax import configs
from rgbd_jax.train import report
from rgbd_jax.train import visualize


def _config(network='I3DWTrans', dataset='NvGesture', **common):
  c = configs.base_config()
  c.model.Network = network
  c.common.dataset = dataset
  c.common.epochs = 6
  for k, v in common.items():
    c.common[k] = v
  return c


def _write_run(workdir, config, epochs=4, spe=3):
  checkpoint.write_config(workdir, config)
  records = []
  for step in range(1, epochs * spe + 1):
    epoch = (step - 1) // spe
    records.append({'step': step, 'epoch': epoch, 'loss': 3.0 / step, 'ce_loss': 2.0 / step,
                    'distillation_loss': 0.5, 'lr': 0.01, 'train_top1': 0.5})
    if step % spe == 0:
      records.append({'step': step, 'epoch': epoch, 'eval': True, 'top1': 0.2 * epoch, 'top1_xs': 0.1,
                      'train_top1': 0.4})
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return records


def test_distillation_start_follows_the_training_rule():
  c = _config()
  c.common.scheduler.warm_up_epochs = 3
  assert report.distillation_start(c)[0] == 2  # optim.distill_weight: from warm_up_epochs - 1
  c.common.scheduler.warm_up_epochs = 1
  assert report.distillation_start(c) == (None, 'distillation weight 1 from the first epoch')
  c.common.distill = 0.0
  assert report.distillation_start(c) == (None, 'distillation weight 0 throughout')
  assert report.distillation_start(_config('FusionNet'))[0] is None
  v2 = _config('DSNV2', warmup_epochs=2)  # the journal's rule: 0 while epoch <= warmup_epochs
  assert report.distillation_start(v2)[0] == 3


def test_learning_curves_one_axis_per_loss_and_the_switch(tmp_path, monkeypatch):
  c = _config()
  c.common.scheduler.warm_up_epochs = 3
  records = _write_run(str(tmp_path), c)
  train = [r for r in records if not r.get('eval')]
  assert report._epoch_start_step(train, 2) == 6  # pylint: disable=protected-access
  assert report._epoch_start_step(train, 9) is None  # pylint: disable=protected-access
  drawn = {}
  real = report.plt.subplots

  def spy(*args, **kwargs):
    fig, axes = real(*args, **kwargs)
    drawn['axes'] = axes.ravel()
    return fig, axes

  monkeypatch.setattr(report.plt, 'subplots', spy)
  path = report.plot_learning_curves(str(tmp_path))
  assert Image.open(path).size[0] > 500
  titles = [ax.get_title() for ax in drawn['axes']]
  assert titles[:5] == ['total loss', 'cross entropy', 'distillation (KL)', 'learning rate', 'validation top-1']
  switch = [line for line in drawn['axes'][0].get_lines() if line.get_linestyle() == '--']
  assert len(switch) == 1 and switch[0].get_xdata()[0] == 6


def test_confusion_matrix_names_classes_from_the_run(tmp_path, monkeypatch):
  checkpoint.write_config(str(tmp_path), _config(dataset='NvGesture'))
  ticks = {}
  real = report.plt.subplots

  def spy(*args, **kwargs):
    fig, ax = real(*args, **kwargs)
    ticks['ax'] = ax
    return fig, ax

  monkeypatch.setattr(report.plt, 'subplots', spy)
  labels = np.arange(25)
  counts = report.plot_confusion_matrix(str(tmp_path / report.CONFUSION_FILE), labels, labels, 25, 'epoch 0')
  assert counts.trace() == 25
  assert [t.get_text() for t in ticks['ax'].get_xticklabels()][:2] == ['move hand right', 'move hand left']
  # IsoGD's list is placeholders: numbers on the axes, not 'gesture 001'
  other = tmp_path / 'iso'
  checkpoint.write_config(str(other), _config(dataset='IsoGD'))
  assert report._names_beside(str(other / 'c.png'), 249) is None  # pylint: disable=protected-access
  with pytest.raises(ValueError, match='3 class names for a 25-class'):
    report.plot_confusion_matrix(str(tmp_path / 'x.png'), labels, labels, 25, 't', ['a', 'b', 'c'])


def test_pictures_from_maps(tmp_path):
  t, s = 6, 32
  clip = np.random.default_rng(0).integers(0, 255, (t, s, s, 3), dtype=np.uint8)
  maps = {'rgb': {'heatmap': np.linspace(0, 1, t * s * s).reshape(t, s, s),
                  'cam': np.zeros((t, s, s))}, 'depth': {'cam': np.ones((t, s, s))}}
  paths = visualize.render(str(tmp_path / 'v'), title='v: "wave" (p=0.900)', clips_u8={'rgb': clip, 'depth': clip},
                           maps=maps, top_k=[('wave', 0.9), ('clap', 0.1)], cam_class='wave')
  assert [os.path.basename(p) for p in paths] == ['v.png', 'v.gif']
  gif = Image.open(paths[1])
  assert gif.n_frames == t
  # rows: rgb clip | heatmap | cam, depth clip | cam: 2 bands of 3 panels, 4x upscaled, a caption
  assert gif.size == (3 * s * 4, 2 * s * 4 + 14)
  np.testing.assert_array_equal(visualize.overlay(clip, np.zeros((t, s, s)))[0, 0, 0],
                                (0.5 * clip[0, 0, 0] + 0.5 * np.array([0, 0, 127.5])).astype(np.uint8))
  assert visualize.safe_name(f'a{os.sep}b c.mp4') == 'a__b_c.mp4'
