"""``tools/compare_runs.py``: compare training/test runs (a sweep's, or any
work dirs of tools/train.py and tools/test.py): variants from their config
differences, mean ± std over seeds, the difference to a baseline and its
significance, per-class gains and losses, CSV, markdown and plots."""
import argparse
import os
import os.path as osp
from typing import List, Optional, Sequence

from dinov2_seg.sweep.compare import (group_variants, per_class_deltas,
                                      pick_baseline, summarise)
from dinov2_seg.sweep.manifest import MANIFEST
from dinov2_seg.sweep.plots import (plot_class_deltas, plot_curves_bands,
                                    plot_metric_bars)
from dinov2_seg.sweep.report import (SIGNIFICANCE_NOTE, class_changes,
                                     markdown_table, write_markdown,
                                     write_per_class_csv, write_rows_csv)
from dinov2_seg.sweep.results import METRICS, find_run_dirs, read_run


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Compare runs: mean ± std over seeds per variant')
    parser.add_argument(
        'paths',
        nargs='+',
        help='sweep folders, run work dirs, or folders of work dirs')
    parser.add_argument(
        '--baseline',
        help='the variant to compare against: its label as printed, or one '
        'of its run dirs (default: the first variant)')
    parser.add_argument(
        '--metric',
        default='mIoU',
        choices=list(METRICS),
        help='the metric of the difference, the test and the bar chart')
    parser.add_argument(
        '--curves',
        nargs='+',
        default=['loss', 'mIoU'],
        help='training scalars to plot (default: %(default)s)')
    parser.add_argument(
        '--out',
        help='where the CSV, markdown and PNG files go (default: '
        'SWEEP_DIR/compare for one sweep, else work_dirs/compare)')
    return parser.parse_args(argv)


def default_out(paths: Sequence[str]) -> str:
    if len(paths) == 1 and osp.isfile(osp.join(paths[0], MANIFEST)):
        return osp.join(paths[0], 'compare')
    return osp.join('work_dirs', 'compare')


def compare_runs(paths: Sequence[str],
                 baseline: Optional[str] = None,
                 metric: str = 'mIoU',
                 out: Optional[str] = None,
                 curves: Sequence[str] = ('loss', 'mIoU'),
                 echo=print) -> dict:
    """Read the runs, write the table, CSVs and plots to ``out``, print
    the table; return what was written and drawn."""
    runs = [read_run(d) for d in find_run_dirs(list(paths))]
    keys, variants = group_variants(runs)
    base = pick_baseline(variants, baseline)
    rows = summarise(variants, base, metric)
    labels = [v.label for v in variants]
    classes, class_means, deltas = per_class_deltas(variants, base)
    out = out or default_out(paths)
    os.makedirs(out, exist_ok=True)
    table = markdown_table(rows, keys, metric)
    changes = class_changes(labels, classes, deltas, base)
    text = '\n\n'.join([
        f'{len(runs)} runs, {len(variants)} variants; baseline: '
        f'{labels[base]}', table, SIGNIFICANCE_NOTE
    ] + (['Per-class IoU against the baseline:\n' +
          '\n'.join(changes)] if changes else []))
    files = write_markdown(text, out)
    files['csv'] = osp.join(out, 'compare.csv')
    write_rows_csv(rows, files['csv'])
    files['per_class_csv'] = osp.join(out, 'per_class.csv')
    write_per_class_csv(labels, classes, class_means, deltas,
                        files['per_class_csv'])
    files['bars'] = osp.join(out, f'{metric}_bars.png')
    bars = plot_metric_bars(labels, [r[metric] for r in rows],
                            [r[f'{metric}_std'] for r in rows], metric, base,
                            files['bars'])
    files['curves'] = osp.join(out, 'curves.png')
    drawn = plot_curves_bands(variants, curves, files['curves'])
    if classes:
        files['class_deltas'] = osp.join(out, 'per_class_delta.png')
        plot_class_deltas(labels, classes, deltas, base, files['class_deltas'])
    echo(text)
    echo('\nFiles: ' + ', '.join(files[k] for k in files))
    return dict(
        rows=rows,
        keys=keys,
        variants=variants,
        baseline=base,
        classes=classes,
        class_deltas=deltas,
        bars=bars,
        curves=drawn,
        files=files,
        table=table)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    return compare_runs(args.paths, args.baseline, args.metric, args.out,
                        args.curves)
