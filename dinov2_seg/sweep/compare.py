"""Runs grouped into variants by their real config differences, with mean
+- std over seeds and the difference to a baseline.

Significance: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``)
of the variant's seeds against the baseline's. Welch rather than Student
because a change of recipe often changes the seed spread too, and the
test must not assume equal variances; a t-test rather than "the gain
exceeds one std" because it accounts for the number of seeds. A
difference with p >= ``ALPHA`` is marked ``~`` (within the seed spread);
with fewer than two seeds on either side no test is possible (``?``).
With two or three seeds only large, consistent gaps reach p < 0.05: the
mark says "not shown", not "no effect".
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .results import METRICS, RunRecord

ALPHA = 0.05
# Settings that differ between any two runs and are no part of a variant.
NOT_A_SETTING = ('work_dir', 'randomness.seed', 'launcher', 'resume')


@dataclass
class Variant:
    """Runs that share every setting but the seed."""
    label: str
    values: Dict[str, str]
    runs: List[RunRecord] = field(default_factory=list)

    def values_of(self, metric: str, source: str = 'test') -> np.ndarray:
        return np.array(
            [getattr(r, source).get(metric, math.nan) for r in self.runs])

    @property
    def seeds(self) -> List:
        return [r.seed for r in self.runs]


def differing_settings(runs: Sequence[RunRecord]) -> List[str]:
    """The setting keys whose values are not the same in every run, in the
    first run's order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    return [
        k for k in keys
        if k not in NOT_A_SETTING and len({r.settings.get(k)
                                           for r in runs}) > 1
    ]


def short_names(keys: Sequence[str]) -> Dict[str, str]:
    """The shortest dotted tails that still tell the keys apart."""
    names = {}
    for key in keys:
        parts = key.split('.')
        for depth in range(1, len(parts) + 1):
            tail = '.'.join(parts[-depth:])
            if sum(k == tail or k.endswith('.' + tail) for k in keys) == 1:
                break
        names[key] = tail
    return names


def group_variants(
        runs: Sequence[RunRecord]) -> Tuple[List[str], List[Variant]]:
    """The differing setting keys and the variants (first-seen order)."""
    keys = differing_settings(runs)
    short = short_names(keys)
    variants: Dict[Tuple, Variant] = {}
    for run in runs:
        values = tuple(run.settings.get(k, '(absent)') for k in keys)
        if values not in variants:
            label = ', '.join(f'{short[k]}={v}'
                              for k, v in zip(keys, values)) or 'all runs'
            variants[values] = Variant(label, dict(zip(keys, values)))
        variants[values].runs.append(run)
    return keys, list(variants.values())


def pick_baseline(variants: List[Variant], baseline: Optional[str]) -> int:
    """The baseline's index: the variant whose label is ``baseline`` or
    that holds the run dir ``baseline`` (a path or its folder name); the
    first variant by default."""
    if baseline is None:
        return 0
    for index, variant in enumerate(variants):
        if variant.label == baseline or any(
                r.work_dir.rstrip('/') == baseline.rstrip('/')
                or r.work_dir.rstrip('/').endswith('/' + baseline.strip('/'))
                for r in variant.runs):
            return index
    raise ValueError(f'--baseline {baseline!r} is neither a variant '
                     f'({[v.label for v in variants]}) nor one of the runs')


def welch_p(sample: np.ndarray, reference: np.ndarray) -> float:
    """Welch's t-test p-value (two-sided); NaN with fewer than two values
    on a side. Two constant samples: 0 if they differ, 1 if not (scipy
    has no t for zero variance)."""
    from scipy import stats
    sample, reference = sample[~np.isnan(sample)], reference[~np.
                                                             isnan(reference)]
    if len(sample) < 2 or len(reference) < 2:
        return math.nan
    if np.ptp(sample) == 0 and np.ptp(reference) == 0:
        return 0.0 if sample[0] != reference[0] else 1.0
    return float(stats.ttest_ind(sample, reference, equal_var=False).pvalue)


def mark(p: float) -> str:
    """``*`` beyond the seed spread, ``~`` within it, ``?`` untested."""
    if math.isnan(p):
        return '?'
    return '*' if p < ALPHA else '~'


def mean_std(values: np.ndarray) -> Tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return float(np.mean(values)), std


def _mean_of(values: List[Optional[float]]) -> float:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else math.nan


def summarise(variants: List[Variant],
              base: int,
              metric: str = 'mIoU') -> List[dict]:
    """One row per variant: the means and stds of the metrics (final =
    the test of the last checkpoint, best = the best validation), the
    difference of ``metric`` to the baseline and its test."""
    if metric not in METRICS:
        raise ValueError(f'--metric {metric!r}: one of {list(METRICS)}')
    reference = variants[base].values_of(metric)
    rows = []
    for index, variant in enumerate(variants):
        row = dict(
            variant=variant.label, **variant.values, seeds=len(variant.runs))
        for name in METRICS:
            row[name], row[f'{name}_std'] = mean_std(variant.values_of(name))
            row[f'best_{name}'], row[f'best_{name}_std'] = mean_std(
                variant.values_of(name, 'best'))
        values = variant.values_of(metric)
        if index == base:
            row['delta'], row['p'], row['mark'] = 0.0, math.nan, 'baseline'
        else:
            row['delta'] = mean_std(values)[0] - mean_std(reference)[0]
            row['p'] = welch_p(values, reference)
            row['mark'] = mark(row['p'])
        row['iterations'] = _mean_of([r.iterations for r in variant.runs])
        row['train_s'] = _mean_of([r.train_seconds for r in variant.runs])
        row['memory_mb'] = _mean_of([r.peak_memory_mb for r in variant.runs])
        row['params'] = _mean_of([r.trainable_params for r in variant.runs])
        rows.append(row)
    return rows


def per_class_deltas(variants: List[Variant],
                     base: int) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Classes, the mean per-class IoU of each variant (variants x
    classes) and its difference to the baseline's."""
    classes = list(
        dict.fromkeys(c for v in variants for r in v.runs
                      for c in r.per_class_iou))
    means = np.array(
        [[_mean_of([r.per_class_iou.get(c) for r in v.runs]) for c in classes]
         for v in variants]).reshape(len(variants), len(classes))
    return classes, means, means - means[base]
