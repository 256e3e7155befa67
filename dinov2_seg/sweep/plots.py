"""The comparison as pictures (PNG): the metric per variant with error
bars, the training curves per variant with a band over seeds, and the
per-class IoU differences to the baseline as a heat map."""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from dinov2_seg.visualization.figures import new_figure, save_figure
from .compare import Variant

DPI = 100


def plot_metric_bars(labels: Sequence[str], means: Sequence[float],
                     stds: Sequence[float], metric: str, base: int,
                     path: str) -> List[Tuple[str, float, float]]:
    """A bar per variant (the mean over seeds), an error bar of one std
    (none for a single seed), the baseline hatched. Returns the bars as
    (label, height, error)."""
    fig = new_figure((max(5.0, 1.2 + 0.9 * len(labels)), 4.5), DPI)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    errors = np.nan_to_num(np.asarray(stds, dtype=float), nan=0.0)
    bars = ax.bar(x, means, yerr=errors, capsize=4, color='tab:blue')
    bars[base].set_facecolor('tab:gray')
    bars[base].set_hatch('//')
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel(f'{metric} (mean ± std over seeds)')
    ax.set_title(f'{metric} per variant (baseline hatched)')
    low = np.nanmin(np.asarray(means) - errors)
    high = np.nanmax(np.asarray(means) + errors)
    margin = max((high - low) * 0.3, 1.0)
    ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin))
    ax.grid(axis='y', alpha=0.3)
    save_figure(fig, path)
    return [(label, float(bar.get_height()), float(error))
            for label, bar, error in zip(labels, bars, errors)]


def seed_band(variant: Variant, key: str):
    """Steps logged by every seed, and the mean and std over seeds there
    (None where no run logged ``key``)."""
    series = [r.scalars[key] for r in variant.runs if key in r.scalars]
    if not series:
        return None
    steps = series[0][0]
    for other, _ in series[1:]:
        steps = np.intersect1d(steps, other)
    values = np.array([
        values[np.searchsorted(run_steps, steps)]
        for run_steps, values in series
    ])
    std = values.std(
        axis=0, ddof=1) if len(series) > 1 else np.zeros(len(steps))
    return steps, values.mean(axis=0), std


def plot_curves_bands(variants: List[Variant], keys: Sequence[str],
                      path: str) -> Dict[str, Dict[str, tuple]]:
    """A panel per scalar (e.g. loss, mIoU), a line per variant (the mean
    over seeds) with a ± std band. Returns label -> key -> (steps, mean,
    std), as drawn."""
    fig = new_figure((8.0, 0.5 + 2.8 * len(keys)), DPI)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    drawn: Dict[str, Dict[str, tuple]] = {v.label: {} for v in variants}
    for ax, key in zip(axes, keys):
        for variant in variants:
            band = seed_band(variant, key)
            if band is None:
                continue
            steps, mean, std = band
            line, = ax.plot(
                steps,
                mean,
                marker='o' if len(steps) <= 20 else None,
                label=variant.label)
            ax.fill_between(
                steps,
                mean - std,
                mean + std,
                color=line.get_color(),
                alpha=0.2)
            drawn[variant.label][key] = band
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].set_title('mean over seeds, band: ± std')
    axes[-1].set_xlabel('iteration')
    save_figure(fig, path)
    return drawn


def plot_class_deltas(labels: Sequence[str], classes: Sequence[str],
                      deltas: np.ndarray, base: int, path: str) -> np.ndarray:
    """Variants (rows, the baseline left out) x classes: the IoU
    difference to the baseline, red for losses, blue for gains, on a scale
    symmetric around 0. Returns the matrix drawn."""
    rows = [i for i in range(len(labels)) if i != base]
    shown = deltas[rows] if rows else np.zeros((0, len(classes)))
    fig = new_figure(
        (max(5.0, 2.5 + 0.5 * len(classes)), max(2.5, 1.5 + 0.45 * len(rows))),
        DPI)
    ax = fig.add_subplot()
    limit = max(float(np.nanmax(np.abs(shown))) if shown.size else 0.0, 0.5)
    image = ax.imshow(
        shown, cmap='RdBu', vmin=-limit, vmax=limit, aspect='auto')
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels(classes, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([labels[i] for i in rows], fontsize=8)
    if shown.size <= 400:
        for (i, j), value in np.ndenumerate(shown):
            ax.text(
                j, i, f'{value:+.1f}', ha='center', va='center', fontsize=7)
    fig.colorbar(image, ax=ax, label=f'IoU - IoU of {labels[base]}')
    ax.set_title('Per-class IoU change against the baseline')
    save_figure(fig, path)
    return shown
