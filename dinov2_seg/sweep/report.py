"""The comparison as text: a markdown table (printed and saved), CSV files
of the rows and of the per-class IoU, and the classes that gain or lose
most against the baseline."""
import csv
import math
import os.path as osp
from typing import Dict, List, Sequence

import numpy as np

from .compare import ALPHA, short_names

SIGNIFICANCE_NOTE = (
    f"Δ: difference of the means to the baseline; * beyond the seed "
    f"spread (Welch's t-test, p < {ALPHA}), ~ within it (p >= {ALPHA}), "
    '? fewer than 2 seeds on a side (no test). final = test of the last '
    'checkpoint, best = best validation during training; mean ± std '
    '(sample std) over seeds.')


def _number(value: float, digits: int = 2) -> str:
    return '-' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def _mean_std(row: dict, name: str) -> str:
    mean, std = row[name], row[f'{name}_std']
    if math.isnan(mean):
        return '-'
    return f'{mean:.2f}' + ('' if math.isnan(std) else f' ± {std:.2f}')


def _count(value: float) -> str:
    if math.isnan(value):
        return '-'
    for unit, size in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if value >= size:
            return f'{value / size:.2f}{unit}'
    return f'{value:.0f}'


def markdown_table(rows: List[dict], keys: Sequence[str], metric: str) -> str:
    """The variants' table in markdown (one row per variant)."""
    short = short_names(keys)
    header = [short[k] for k in keys] or ['variant']
    header += [
        'seeds', 'mIoU', 'mAcc', 'aAcc', 'best mIoU', f'Δ {metric}', 'p',
        'iters', 'train s', 'peak MB', 'trainable'
    ]
    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join('---' for _ in header) + '|'
    ]
    for row in rows:
        cells = [row[k] for k in keys] or [row['variant']]
        if row['mark'] == 'baseline':
            delta = 'baseline'
        else:
            delta = f"{row['delta']:+.2f} {row['mark']}"
        cells += [
            str(row['seeds']),
            _mean_std(row, 'mIoU'),
            _mean_std(row, 'mAcc'),
            _mean_std(row, 'aAcc'),
            _mean_std(row, 'best_mIoU'), delta,
            _number(row['p'], 3),
            _number(row['iterations'], 0),
            _number(row['train_s'], 1),
            _number(row['memory_mb'], 0),
            _count(row['params'])
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def class_changes(labels: Sequence[str],
                  classes: Sequence[str],
                  deltas: np.ndarray,
                  base: int,
                  top: int = 3) -> List[str]:
    """Per variant, the ``top`` classes that gain and lose most IoU."""
    lines = []
    for index, label in enumerate(labels):
        if index == base or not len(classes):
            continue
        order = np.argsort(-np.nan_to_num(deltas[index], nan=0.0))
        gains = [
            f'{classes[i]} {deltas[index, i]:+.2f}' for i in order[:top]
            if deltas[index, i] > 0
        ]
        losses = [
            f'{classes[i]} {deltas[index, i]:+.2f}' for i in order[::-1][:top]
            if deltas[index, i] < 0
        ]
        lines.append(f"{label}: gains {', '.join(gains) or 'none'}; "
                     f"losses {', '.join(losses) or 'none'}")
    return lines


def write_rows_csv(rows: List[dict], path: str) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, 'w', encoding='utf-8', newline='') as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({
                k: ('' if isinstance(v, float) and math.isnan(v) else v)
                for k, v in row.items()
            })


def write_per_class_csv(labels: Sequence[str], classes: Sequence[str],
                        means: np.ndarray, deltas: np.ndarray,
                        path: str) -> None:
    with open(path, 'w', encoding='utf-8', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['variant', 'class', 'IoU', 'delta'])
        for i, label in enumerate(labels):
            for j, name in enumerate(classes):
                writer.writerow([
                    label, name,
                    _number(means[i, j], 4),
                    _number(deltas[i, j], 4)
                ])


def write_markdown(text: str, out_dir: str) -> Dict[str, str]:
    path = osp.join(out_dir, 'compare.md')
    with open(path, 'w', encoding='utf-8') as file:
        file.write(text + '\n')
    return dict(markdown=path)
