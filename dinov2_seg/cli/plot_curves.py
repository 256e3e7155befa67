"""``tools/plot_curves.py``: loss, learning rate and validation metrics
against the iteration, several runs overlaid."""
import argparse
import os.path as osp
from typing import List, Optional

from dinov2_seg.visualization.training_curves import (DEFAULT_KEYS,
                                                      plot_training_curves)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot training curves from mmengine work dirs')
    parser.add_argument(
        'work_dirs',
        nargs='+',
        help='work dirs of training runs (or their vis_data/scalars.json)')
    parser.add_argument(
        '--keys',
        nargs='+',
        default=list(DEFAULT_KEYS),
        help='scalars to plot, one panel each (default: %(default)s; '
        'others: decode.acc_seg, aAcc, mAcc, time, ...)')
    parser.add_argument(
        '--labels', nargs='+', help='legend names, one per work dir')
    parser.add_argument(
        '--out',
        help='PNG to write (default: WORK_DIR/plots/curves.png of the first '
        'run)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = args.out or osp.join(args.work_dirs[0], 'plots', 'curves.png')
    plotted = plot_training_curves(args.work_dirs, out, args.keys, args.labels)
    for label, series in plotted.items():
        found = ', '.join(f'{key} ({len(steps)} points)'
                          for key, (steps, _) in series.items()) or 'nothing'
        print(f'{label}: {found}')
    print(f'Curves: {out}')
    return 0
