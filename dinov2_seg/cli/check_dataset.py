"""``tools/check_dataset.py``: check a config's data before a long run.

Every image/label pair of the config's dataloaders (the datasets its own
classes list, decoded by its own loaders: :mod:`dinov2_seg.datasets.doctor`)
is checked in parallel; the findings are printed, written as a report
(markdown and JSON) with the class pixel distribution of each split as a
chart, and any error makes the exit status 1.
"""
import argparse
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from dinov2_seg.datasets.doctor import (check_pairs, labels_without_images,
                                        problem)
from dinov2_seg.datasets.layout import check_dataset_paths, iter_datasets
from dinov2_seg.engine.run_config import load_config
from dinov2_seg.visualization.evaluation_plots import plot_share_bars

LOADERS = {
    'train': ['train_dataloader'],
    'val': ['val_dataloader', 'test_dataloader'],
}
LOADERS['all'] = LOADERS['train'] + LOADERS['val']
# Findings of one kind printed on the console (the report lists all).
SHOWN_PER_KIND = 10


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check every image/label pair of a config's datasets")
    parser.add_argument('config')
    parser.add_argument(
        '--split',
        choices=sorted(LOADERS),
        default='all',
        help='train: train_dataloader; val: val_dataloader and '
        'test_dataloader (when it differs); all (default): all of them')
    parser.add_argument(
        '--workers',
        type=int,
        default=min(8,
                    os.cpu_count() or 1),
        help='processes checking files (0: this one)')
    parser.add_argument(
        '--out-dir',
        help='where report.md, report.json and class_distribution.png go '
        '(default: work_dirs/check_dataset/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error('--workers must be >= 0')
    return args


def scan_loader(cfg: Config, key: str, workers: int) -> dict:
    """The findings of one dataloader's datasets (each dataset a wrapper
    holds): files, errors about the split itself, class pixels."""
    split = dict(loader=key, datasets=[], files=[], problems=[], classes=None)
    try:
        check_dataset_paths(cfg, [key])
    except FileNotFoundError as error:
        split['problems'].append(
            problem('error', 'layout', key, ' '.join(str(error).split())))
        return split
    for dataset_key, dataset_cfg in iter_datasets(cfg[key]['dataset'],
                                                  f'{key}.dataset'):
        dataset = DATASETS.build(dataset_cfg)
        classes = tuple(dataset.metainfo['classes'])
        split['classes'] = split['classes'] or classes
        split['datasets'].append(
            dict(
                key=dataset_key,
                type=type(dataset).__name__,
                images=len(dataset),
                num_classes=len(classes),
                reduce_zero_label=bool(
                    getattr(dataset, 'reduce_zero_label', False))))
        split['files'] += check_pairs(dataset, len(classes), workers)
        split['problems'] += labels_without_images(dataset)
    if not split['files']:
        split['problems'].append(
            problem('error', 'empty_split', key,
                    f'{key} lists no images: an empty split'))
    return split


def _head_classes(cfg: Config, split: dict) -> List[dict]:
    head = cfg.get('model', {}).get('decode_head') or {}
    count = head.get('num_classes') if isinstance(head, dict) else None
    if count is None or split['classes'] is None or count == len(
            split['classes']):
        return []
    return [
        problem(
            'error', 'num_classes', split['loader'],
            f"model.decode_head.num_classes={count} but {split['loader']}'s "
            f"dataset has {len(split['classes'])} classes "
            '(metainfo.classes): they must be equal')
    ]


def summarise(split: dict) -> dict:
    """Counts of a scanned split: images, errors, warnings, label modes,
    pixels per class."""
    findings = split['problems'] + [
        p for f in split['files'] for p in f['problems']
    ]
    modes: Dict[str, int] = {}
    for found in split['files']:
        if found['label_mode']:
            modes[found['label_mode']] = modes.get(found['label_mode'], 0) + 1
    counts = [f['class_pixels'] for f in split['files'] if f['class_pixels']]
    pixels = np.sum(counts, axis=0).tolist() if counts else []
    return dict(
        images=len(split['files']),
        errors=sum(p['level'] == 'error' for p in findings),
        warnings=sum(p['level'] == 'warning' for p in findings),
        label_modes=modes,
        class_pixels=pixels,
        findings=findings)


def _print_findings(name: str, summary: dict) -> None:
    print(f"{name}: {summary['images']} images, {summary['errors']} errors, "
          f"{summary['warnings']} warnings; label modes: " +
          (', '.join(f'{mode} {n}'
                     for mode, n in summary['label_modes'].items()) or 'none'))
    by_kind: Dict[str, List[dict]] = {}
    for found in summary['findings']:
        by_kind.setdefault(found['kind'], []).append(found)
    for kind, found in by_kind.items():
        for item in found[:SHOWN_PER_KIND]:
            print(f"  {item['level']} [{kind}] {item['message']}")
        if len(found) > SHOWN_PER_KIND:
            print(f'  ... and {len(found) - SHOWN_PER_KIND} more [{kind}] '
                  '(report.md lists all)')


def write_report(report: dict, out_dir: str) -> Dict[str, str]:
    """report.json, report.md and class_distribution.png under
    ``out_dir``; their paths by name."""
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(
        json=osp.join(out_dir, 'report.json'),
        markdown=osp.join(out_dir, 'report.md'),
        chart=osp.join(out_dir, 'class_distribution.png'))
    with open(paths['json'], 'w') as file:
        json.dump(report, file, indent=1)
    shares, classes = {}, None
    for name, split in report['splits'].items():
        pixels = np.asarray(split['class_pixels'], np.float64)
        if pixels.size and pixels.sum() > 0:
            shares[name] = pixels / pixels.sum() * 100
            classes = classes or split['classes']
    if shares:
        plot_share_bars(shares, classes, paths['chart'],
                        'Class distribution per split')
    else:
        paths.pop('chart')
    lines = [
        f"# Dataset check of {report['config']}", '',
        f"{report['errors']} errors, {report['warnings']} warnings.", '',
        '| split | images | errors | warnings | label modes |',
        '|---|---|---|---|---|'
    ]
    for name, split in report['splits'].items():
        modes = ', '.join(f'{m} {n}' for m, n in split['label_modes'].items())
        lines.append(f"| {name} | {split['images']} | {split['errors']} | "
                     f"{split['warnings']} | {modes} |")
    if 'chart' in paths:
        lines += ['', '![class distribution](class_distribution.png)', '']
        lines += [
            '| class | ' + ' | '.join(shares) + ' |',
            '|---' * (len(shares) + 1) + '|'
        ]
        for index, name in enumerate(classes):
            lines.append(f'| {name} | ' +
                         ' | '.join(f'{share[index]:.2f}%'
                                    for share in shares.values()) + ' |')
    for name, split in report['splits'].items():
        if split['findings']:
            lines += ['', f'## {name}', '']
            lines += [
                f"- {f['level']} [{f['kind']}] {f['message']}"
                for f in split['findings']
            ]
    with open(paths['markdown'], 'w') as file:
        file.write('\n'.join(lines) + '\n')
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    report = dict(config=args.config, splits={}, errors=0, warnings=0)
    scanned: List[dict] = []
    start = time.perf_counter()
    for key in LOADERS[args.split]:
        loader = cfg.get(key)
        if not loader or 'dataset' not in loader or any(
                loader['dataset'] == cfg[k]['dataset'] for k in scanned):
            continue  # test_dataloader = val_dataloader: scanned once
        scanned.append(key)
        split = scan_loader(cfg, key, args.workers)
        split['problems'] += _head_classes(cfg, split)
        summary = summarise(split)
        name = key[:-len('_dataloader')]
        _print_findings(name, summary)
        report['splits'][name] = dict(
            summary,
            classes=split['classes'],
            datasets=split['datasets'],
            files=split['files'])
        report['errors'] += summary['errors']
        report['warnings'] += summary['warnings']
    # How long the checks took (each split's dataset built and scanned).
    report['seconds'] = time.perf_counter() - start
    report['images_per_second'] = sum(
        s['images'] for s in report['splits'].values()) / report['seconds']
    report['workers'] = args.workers
    out_dir = args.out_dir or osp.join(
        'work_dirs', 'check_dataset',
        osp.splitext(osp.basename(args.config))[0])
    paths = write_report(report, out_dir)
    print(f"{report['errors']} errors, {report['warnings']} warnings "
          f"({report['images_per_second']:.1f} images/s) -> " +
          ', '.join(paths.values()))
    return 1 if report['errors'] else 0
