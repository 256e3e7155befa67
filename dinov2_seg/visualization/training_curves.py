"""Training curves (loss, learning rate, validation mIoU ...) of one or more
runs, read from the ``vis_data/scalars.json`` files that mmengine's
LocalVisBackend writes under a work dir."""
import glob
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .figures import new_figure, save_figure

Series = Tuple[np.ndarray, np.ndarray]  # steps (iterations), values
DEFAULT_KEYS = ('loss', 'lr', 'mIoU')
DPI = 100


def scalar_files(work_dir: str) -> List[str]:
    """The ``scalars.json`` files of a work dir, oldest run first (mmengine
    names each run's folder by its start time, and ``--resume`` starts a
    new one)."""
    if osp.isfile(work_dir) and work_dir.endswith('.json'):
        return [work_dir]
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'{work_dir} holds no */vis_data/scalars.json; training writes '
            "it with mmengine's LocalVisBackend (visualizer.vis_backends in "
            'configs/_base_/default_runtime.py)')
    return files


def load_scalars(work_dir: str) -> Dict[str, Series]:
    """Every scalar logged in ``work_dir`` as (steps, values), sorted by
    step; where a resumed run logged a step again, its value wins."""
    by_key: Dict[str, Dict[int, float]] = {}
    for path in scalar_files(work_dir):
        with open(path, encoding='utf-8') as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f'{path}, line {number}: not JSON '
                                     f'({error})') from error
                step = entry.get('step', entry.get('iter'))
                if step is None:
                    continue
                for key, value in entry.items():
                    if key not in ('step', 'iter') and isinstance(
                            value, (int, float)):
                        by_key.setdefault(key, {})[int(step)] = float(value)
    return {
        key: (np.array(sorted(values)),
              np.array([values[s] for s in sorted(values)]))
        for key, values in by_key.items()
    }


def run_labels(work_dirs: Sequence[str]) -> List[str]:
    """Short names for the legend: the folder names, or the paths when two
    folders share a name."""
    names = [osp.basename(osp.normpath(d)) for d in work_dirs]
    return names if len(set(names)) == len(names) else list(work_dirs)


def curves_size(num_keys: int) -> Tuple[float, float]:
    return (8.0, 0.5 + 2.5 * num_keys)


def plot_training_curves(
        work_dirs: Sequence[str],
        out: str,
        keys: Sequence[str] = DEFAULT_KEYS,
        labels: Optional[Sequence[str]] = None
) -> Dict[str, Dict[str, Series]]:
    """One panel per scalar in ``keys`` against the iteration, one line per
    run (for ablations), written as a PNG to ``out``.

    Returns:
        dict: run label -> scalar name -> (steps, values), as plotted.
    """
    if labels is None:
        labels = run_labels(work_dirs)
    if len(labels) != len(work_dirs):
        raise ValueError(f'{len(labels)} labels for {len(work_dirs)} runs')
    runs = {
        label: load_scalars(work_dir)
        for label, work_dir in zip(labels, work_dirs)
    }
    fig = new_figure(curves_size(len(keys)), DPI)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    plotted: Dict[str, Dict[str, Series]] = {label: {} for label in runs}
    for ax, key in zip(axes, keys):
        for label, scalars in runs.items():
            if key in scalars:
                steps, values = scalars[key]
                # Validation is logged rarely: mark its points.
                ax.plot(
                    steps,
                    values,
                    marker='o' if len(steps) <= 20 else None,
                    label=label)
                plotted[label][key] = scalars[key]
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if not any(key in p for p in plotted.values()):
            ax.text(
                0.5,
                0.5,
                f'no {key!r} logged',
                ha='center',
                va='center',
                transform=ax.transAxes)
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel('iteration')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    save_figure(fig, out)
    return plotted
