"""Run metrics: the metrics.jsonl log and exact evaluation accumulators."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

METRICS_FILE = 'metrics.jsonl'


def _plain(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, 'dtype'):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return value


class MetricsWriter:
  """Appends one JSON object per logged step or evaluation to <workdir>/metrics.jsonl.

  Only process 0 writes. On resume, records beyond the resumed step are
  dropped first, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      kept = [r for r in read_metrics(self.path) if r.get('step', 0) <= resume_step]
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)
      os.replace(tmp, self.path)
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)  # a fresh run in this workdir

  def write(self, record: dict[str, Any]) -> None:
    if not self.active:
      return
    record = {k: _plain(v) for k, v in record.items()}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def read_metrics(path: str) -> list[dict[str, Any]]:
  records = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{n}: not a JSON object: {e}') from e
  return records


class TrainAverager:
  """Means of the step metrics between two log lines."""

  def __init__(self):
    self.sums: dict[str, float] = {}
    self.n = 0

  def add(self, metrics: dict[str, Any]):
    for k, v in metrics.items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)
    self.n += 1

  def means(self) -> dict[str, float]:
    return {k: v / max(self.n, 1) for k, v in self.sums.items()}

  def state(self) -> dict[str, Any]:
    """What a checkpoint keeps, so a resumed epoch reports the same means."""
    return {'sums': dict(self.sums), 'n': self.n}

  @classmethod
  def from_state(cls, state: dict[str, Any] | None) -> 'TrainAverager':
    averager = cls()
    if state:
      averager.sums = {k: float(v) for k, v in state['sums'].items()}
      averager.n = int(state['n'])
    return averager


class EvalAccumulator:
  """(sum, count) accumulation of eval_step outputs; padded examples carry mask False."""

  def __init__(self):
    self.sums: dict[str, float] = {}
    self.count = 0.0
    self.labels, self.preds, self.logits, self.index = [], [], [], []

  def add(self, out: dict[str, Any], labels: np.ndarray, mask: np.ndarray,
          index: np.ndarray | None = None):
    for k, v in out['sums'].items():
      self.sums[k] = self.sums.get(k, 0.0) + float(v)
    self.count += float(out['count'])
    mask = np.asarray(mask, bool)
    self.labels.append(np.asarray(labels)[mask])
    self.preds.append(np.asarray(out['pred'])[mask])
    self.logits.append(np.asarray(out['logits'], np.float32)[mask])
    if index is not None:
      self.index.append(np.asarray(index)[mask])

  def result(self) -> dict[str, float]:
    if self.count == 0:
      raise ValueError('evaluation saw no examples (empty validation split?)')
    return {k: v / self.count for k, v in self.sums.items()} | {'num_examples': int(self.count)}

  def arrays(self) -> dict[str, np.ndarray]:
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros((0,), dt)  # noqa: E731
    return {'labels': cat(self.labels, np.int32), 'preds': cat(self.preds, np.int32),
            'logits': np.concatenate(self.logits) if self.logits else np.zeros((0, 0), np.float32),
            'index': cat(self.index, np.int32)}

