"""PNG plots of a run: learning curves and the confusion matrix at the best epoch.

Learning curves: each loss term on its own axis (the total, the cross entropy, the distillation,
and the fusion network's BCE and MSE when logged), the learning rate, and the validation top-1 per
epoch; a dashed line marks the step (and epoch) where the distillation loss starts to count, from
the run's config (`optim.distill_weight`: the conference's rule or the network's own). The confusion matrix labels
its classes by name when the dataset's class names are known (`rgbd_jax.data.class_names`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from rgbd_jax import checkpoint  # noqa: E402
from rgbd_jax import configs  # noqa: E402
from rgbd_jax.data import class_names as class_names_lib  # noqa: E402
from rgbd_jax.models import build  # noqa: E402
from rgbd_jax.train import metrics as metrics_lib  # noqa: E402
from rgbd_jax.train import optim  # noqa: E402

CURVES_FILE = 'learning_curves.png'
CONFUSION_FILE = 'confusion_matrix.png'
# Loss terms in the order they are drawn (metrics.jsonl keys); others found are drawn after them.
LOSS_TERMS = ('loss', 'ce_loss', 'distillation_loss', 'bce_loss', 'mse_loss')
LOSS_TITLES = {'loss': 'total loss', 'ce_loss': 'cross entropy', 'distillation_loss': 'distillation (KL)',
               'bce_loss': 'modality BCE', 'mse_loss': 'reconstruction MSE'}
# Networks whose losses do not follow the per-epoch distillation weight.
FIXED_DISTILLATION = {'FusionNet': 'distillation weight 1 from the first epoch (as tools/fusion.py)',
                      'UMDRFusion': 'no distillation (frozen streams)'}
NAMED_TICKS_UP_TO = 60   # classes named on the confusion matrix's axes
COUNTS_UP_TO = 30        # classes whose cells show their counts


def _run_config(directory: str) -> ml_collections.ConfigDict | None:
  try:
    return checkpoint.read_config(directory)
  except (OSError, ValueError) as e:
    logging.debug('no config for the plots in %s: %s', directory, e)
    return None


def distillation_start(config: ml_collections.ConfigDict) -> tuple[int | None, str]:
  """(first epoch whose distillation weight is > 0 after a zero-weight start, or None; a note)."""
  kind = build.network(config)
  if kind.name in FIXED_DISTILLATION:
    return None, FIXED_DISTILLATION[kind.name]
  weights = [optim.distill_weight(config, e) for e in range(max(int(config.common.epochs), 1))]
  if weights[0] > 0:
    return None, f'distillation weight {weights[0]:g} from the first epoch'
  first = next((e for e, w in enumerate(weights) if w > 0), None)
  if first is None:
    return None, 'distillation weight 0 throughout'
  return first, f'distillation on from epoch {first} (weight {weights[first]:g})'


def _epoch_start_step(train: list[dict[str, Any]], epoch: int) -> int | None:
  """The step at which `epoch` begins: the last logged step of the epochs before it (logged at each
  epoch's end), None when the run has not got there."""
  before = [r['step'] for r in train if r.get('epoch', 0) < epoch]
  after = [r for r in train if r.get('epoch', 0) >= epoch]
  return max(before) if before and after else None


def plot_learning_curves(workdir: str) -> str:
  """Each loss term, the learning rate per logged step, validation top-1 per epoch."""
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILE))
  train = [r for r in records if not r.get('eval')]
  evals = [r for r in records if r.get('eval')]
  terms = [k for k in LOSS_TERMS if any(k in r for r in train)]
  terms += sorted({k for r in train for k in r if k.endswith('_loss') and k not in terms})
  panels = (terms or ['loss']) + ['lr', 'top1']
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
  axes = axes.ravel()
  for ax in axes[len(panels):]:
    ax.axis('off')
  config = _run_config(workdir)
  start, note = distillation_start(config) if config is not None else (None, '')
  switch_step = _epoch_start_step(train, start) if start is not None else None
  steps = [r['step'] for r in train]
  for ax, key in zip(axes, panels):
    if key == 'top1':
      continue
    if train and key in train[0]:
      ax.plot(steps, [r.get(key, np.nan) for r in train], linewidth=1)
    if key == 'lr':
      ax.set(title='learning rate', xlabel='step', yscale='log' if train else 'linear')
    else:
      ax.set(title=LOSS_TITLES.get(key, key.replace('_', ' ')), xlabel='step')
    if switch_step is not None:
      ax.axvline(switch_step, color='tab:red', linestyle='--', linewidth=1,
                 label=f'distillation on (epoch {start})')
      ax.legend(fontsize=7)
  ax = axes[len(panels) - 1]
  if evals:
    epochs = [r['epoch'] for r in evals]
    for key in sorted({k for r in evals for k in r if k.startswith('top1')}):
      ax.plot(epochs, [r.get(key, np.nan) for r in evals], marker='o' if key == 'top1' else None,
              linewidth=2.5 if key == 'top1' else 1, label=key)
    if 'train_top1' in evals[0]:
      ax.plot(epochs, [r['train_top1'] for r in evals], linestyle='--', label='train top1')
  if start is not None:
    ax.axvline(start - 0.5, color='tab:red', linestyle='--', linewidth=1)
  ax.set(title='validation top-1', xlabel='epoch', ylim=(0, 1.02))
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  if note:
    fig.suptitle(note, fontsize=9)
  fig.tight_layout()
  path = os.path.join(workdir, CURVES_FILE)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def _names_beside(path: str, num_classes: int) -> list[str] | None:
  """Class names of the run whose config.json is beside `path`, when real names are known."""
  config = _run_config(os.path.dirname(os.path.abspath(path)))
  if config is None or configs.num_classes(config) != num_classes:
    return None
  try:
    names = class_names_lib.for_config(config)
  except (OSError, ValueError):
    return None
  return list(names.names) if names.known else None


def plot_confusion_matrix(path: str, labels: np.ndarray, preds: np.ndarray, num_classes: int,
                          title: str, class_names: Sequence[str] | None = None) -> np.ndarray:
  """Row-normalised confusion matrix (rows: true class); returns the counts.

  Classes are named by `class_names`, else by the run's dataset names when `path` lies in a run
  directory (its config.json) whose dataset has known names, else numbered.
  """
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
  rows = counts.sum(1, keepdims=True)
  norm = counts / np.maximum(rows, 1)
  if class_names is None:
    class_names = _names_beside(path, num_classes)
  elif len(class_names) != num_classes:
    raise ValueError(f'{len(class_names)} class names for a {num_classes}-class confusion matrix')
  size = min(4 + 0.25 * num_classes, 30)
  fig, ax = plt.subplots(figsize=(size, size))
  im = ax.imshow(norm, vmin=0, vmax=1, cmap='Blues')
  fig.colorbar(im, ax=ax, fraction=0.046, label='share of the true class')
  if num_classes <= COUNTS_UP_TO:
    for i in range(num_classes):
      for j in range(num_classes):
        if counts[i, j]:
          ax.text(j, i, str(counts[i, j]), ha='center', va='center', fontsize=8,
                  color='white' if norm[i, j] > 0.5 else 'black')
  if num_classes <= NAMED_TICKS_UP_TO:
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    font = 8 if num_classes <= COUNTS_UP_TO else 6
    ax.set_xticks(range(num_classes), names, rotation=90, fontsize=font)
    ax.set_yticks(range(num_classes), names, fontsize=font)
  ax.set(xlabel='predicted', ylabel='true', title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return counts
