"""PNG plots of a run: learning curves and the confusion matrix at the best epoch."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from rgbd_jax.train import metrics as metrics_lib  # noqa: E402

CURVES_FILE = 'learning_curves.png'
CONFUSION_FILE = 'confusion_matrix.png'


def plot_learning_curves(workdir: str) -> str:
  """Training loss and lr per logged step, validation top-1 per epoch."""
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILE))
  train = [r for r in records if not r.get('eval')]
  evals = [r for r in records if r.get('eval')]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  if train:
    steps = [r['step'] for r in train]
    axes[0].plot(steps, [r['loss'] for r in train], label='total')
    if 'ce_loss' in train[0]:
      axes[0].plot(steps, [r['ce_loss'] for r in train], label='ce')
    axes[1].plot(steps, [r['lr'] for r in train])
  axes[0].set(title='training loss', xlabel='step')
  axes[0].legend()
  axes[1].set(title='learning rate', xlabel='step', yscale='log')
  if evals:
    epochs = [r['epoch'] for r in evals]
    for key in sorted({k for r in evals for k in r if k.startswith('top1')}):
      axes[2].plot(epochs, [r.get(key, np.nan) for r in evals], marker='o' if key == 'top1' else None,
                   linewidth=2.5 if key == 'top1' else 1, label=key)
    if 'train_top1' in evals[0]:
      axes[2].plot(epochs, [r['train_top1'] for r in evals], linestyle='--', label='train top1')
  axes[2].set(title='validation top-1', xlabel='epoch', ylim=(0, 1.02))
  axes[2].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, CURVES_FILE)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def plot_confusion_matrix(path: str, labels: np.ndarray, preds: np.ndarray, num_classes: int,
                          title: str, class_names: Sequence[str] | None = None) -> np.ndarray:
  """Row-normalised confusion matrix (rows: true class); returns the counts."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
  rows = counts.sum(1, keepdims=True)
  norm = counts / np.maximum(rows, 1)
  size = min(4 + 0.25 * num_classes, 30)
  fig, ax = plt.subplots(figsize=(size, size))
  im = ax.imshow(norm, vmin=0, vmax=1, cmap='Blues')
  fig.colorbar(im, ax=ax, fraction=0.046)
  if num_classes <= 30:
    for i in range(num_classes):
      for j in range(num_classes):
        if counts[i, j]:
          ax.text(j, i, str(counts[i, j]), ha='center', va='center', fontsize=8,
                  color='white' if norm[i, j] > 0.5 else 'black')
    names = class_names or [str(i) for i in range(num_classes)]
    ax.set_xticks(range(num_classes), names, rotation=90)
    ax.set_yticks(range(num_classes), names)
  ax.set(xlabel='predicted', ylabel='true', title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return counts
