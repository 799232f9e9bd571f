"""The model benchmark's figures: rounds -> one row per (phase, dtype, batch), progress lines, the table.

Each side's seconds for a cell: with several rounds (processes), the median of the
rounds' medians and the spread (min-max) of those medians; with one round, the
median and min-max of that round's timed repeats. The ratio is original / ours
(above 1: ours is faster).
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from rgbd_jax.tools.benchmark import common

GIB = 1024 ** 3
COLUMNS = ('network', 'dtype', 'phase', 'B', 'ours s (min-max)', 'clips/s', 'TFLOP/s', 'MFU', 'peak GiB',
           'original s', 'ratio')


def _key(record: dict[str, Any]) -> tuple[str, str, int]:
  return record['phase'], record['dtype'], int(record['batch'])


def _side(rounds: Sequence[Sequence[dict[str, Any]]], peaks: dict[str, dict[str, Any]] | None = None
          ) -> dict[tuple[str, str, int], dict[str, Any]]:
  """One side's cells over its rounds (`peaks`: dtype -> {'tflops', 'source'} for MFU, else the records')."""
  cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
  for records in rounds:
    for r in records:
      if r.get('event') == 'cell':
        cells.setdefault(_key(r), []).append(r)
  out = {}
  for key, records in cells.items():
    ok = [r for r in records if r['status'] == 'ok']
    if not ok:
      statuses = {r['status'] for r in records}
      out[key] = {'status': 'OOM' if 'OOM' in statuses else sorted(statuses)[0],
                  'reason': next((r.get('reason') or r.get('error') for r in records
                                  if r.get('reason') or r.get('error')), '')}
      continue
    medians = [r['median'] for r in ok]
    if len(ok) > 1:
      agg = {'median': statistics.median(medians), 'min': min(medians), 'max': max(medians), 'spread_of': 'rounds'}
    else:
      agg = {'median': ok[0]['median'], 'min': ok[0]['min'], 'max': ok[0]['max'], 'spread_of': 'repeats'}
    first = ok[0]
    agg.update(status='ok', rounds=len(ok), round_medians=medians,
               clips_per_s=first.get('global_batch', first['batch']) / agg['median'])
    for name in ('gflop', 'peak_tflops', 'peak_source', 'devices', 'peak_bytes', 'memory', 'global_batch',
                 'compile_s'):
      if name in first:
        agg[name] = first[name]
    if peaks and key[1] in peaks and 'gflop' in agg:
      agg['peak_tflops'], agg['peak_source'] = peaks[key[1]]['tflops'], peaks[key[1]]['source']
    if agg.get('gflop') is not None:
      agg['tflops'] = agg['gflop'] / agg['median'] / 1e3
      if agg.get('peak_tflops'):
        agg['mfu'] = agg['tflops'] / (agg['peak_tflops'] * agg.get('devices', 1))
    out[key] = agg
  return out


def aggregate(network: str, ours: Sequence[Sequence[dict[str, Any]]],
              original: Sequence[Sequence[dict[str, Any]]] = (),
              peaks: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
  """Rows (training first, then evaluation; dtype; batch) of both sides' rounds."""
  a, b = _side(ours, peaks), _side(original)
  rank = lambda name, names: names.index(name) if name in names else len(names)
  order = lambda k: (rank(k[0], common.PHASES), rank(k[1], common.DTYPES), k[1], k[2])
  rows = []
  for key in sorted(set(a) | set(b), key=order):
    row = {'network': network, 'phase': key[0], 'dtype': key[1], 'batch': key[2], 'ours': a.get(key),
           'original': b.get(key)}
    if row['ours'] and row['original'] and row['ours']['status'] == row['original']['status'] == 'ok':
      row['ratio'] = row['original']['median'] / row['ours']['median']
    rows.append(row)
  return rows


def largest_batches(rows: Sequence[dict[str, Any]], side: str = 'ours') -> dict[str, int | None]:
  """'phase dtype' -> the largest batch that ran (None: none did)."""
  out: dict[str, int | None] = {}
  for r in rows:
    name = f'{r["phase"]} {r["dtype"]}'
    cell = r.get(side)
    out.setdefault(name, None)
    if cell and cell['status'] == 'ok':
      out[name] = max(out[name] or 0, r['batch'])
  return out


def _seconds(x: float) -> str:
  return f'{x:.4g}'


def _cell_seconds(cell: dict[str, Any] | None) -> str:
  if not cell:
    return '-'
  if cell['status'] != 'ok':
    return cell['status']
  return f'{_seconds(cell["median"])} ({_seconds(cell["min"])}-{_seconds(cell["max"])})'


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  """The README-ready table."""
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '|'.join(' --- ' for _ in COLUMNS) + '|']
  for r in rows:
    o = r['ours'] or {'status': '-'}
    ok = o['status'] == 'ok'
    fmt = lambda name, spec: format(o[name], spec) if ok and o.get(name) is not None else '-'
    peak = f'{o["peak_bytes"] / GIB:.2f}' if ok and o.get('peak_bytes') is not None else '-'
    mfu = f'{o["mfu"]:.1%}' if ok and o.get('mfu') is not None else '-'
    ratio = f'{r["ratio"]:.2f}x' if r.get('ratio') else '-'
    cells = [r['network'], r['dtype'], r['phase'], str(r['batch']), _cell_seconds(r['ours']),
             fmt('clips_per_s', '.3g'), fmt('tflops', '.3g'), mfu, peak, _cell_seconds(r['original']), ratio]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def progress_line(record: dict[str, Any], label: str = '') -> str | None:
  """A line for a worker's record as it arrives (None for records not worth a line)."""
  event = record.get('event')
  head = f'[{label}] ' if label else ''
  if event == 'progress':
    return head + record['message']
  if event == 'cell':
    what = f'{record["side"]} {record["phase"]} {record["dtype"]} B={record["batch"]}'
    if record['status'] != 'ok':
      why = record.get('reason') or record.get('error') or ''
      return head + f'{what}: {record["status"]}' + (f' ({why})' if why else '')
    line = (f'{what}: {_seconds(record["median"])} s (min {_seconds(record["min"])}, max {_seconds(record["max"])} '
            f'of {len(record["times"])})')
    if 'gflop' in record:
      line += f', {record["gflop"]:.1f} GFLOP, {record["gflop"] / record["median"] / 1e3:.3g} TFLOP/s'
    if record.get('peak_bytes') is not None:
      line += f', peak {record["peak_bytes"] / GIB:.2f} GiB'
    if record.get('compile_s') is not None:
      line += f', compiled in {record["compile_s"]:.1f} s'
    return head + line
  if event == 'failed':
    return head + f'{record.get("side", "original")} failed ({record.get("where", "")}): {record["error"]}'
  return None
