"""The benchmark rows of ``tools/gpu_check.sh`` and its summary.

``run``: the GPU rows still pending in docs/benchmarks.md, each one
``tools/benchmark.py`` run (its ``main``, in this process: one import of
torch and mmseg for all rows) appending its JSON line to ``--out``; a row
whose estimated time would pass the deadline is skipped with a line saying
so, and a row that fails is recorded with its error; every row's outcome
goes to ``--status`` as it ends (a tab-separated line), so that a run cut
short still leaves its record. ``--rehearse``: three rows of tiny models on
the CPU (tools/gpu_check.sh --rehearse).

``summary``: the markdown table of the steps and of the rows, from the
status files and the JSON lines (the standard library only: it runs even
where the install failed).
"""
import argparse
import json
import os.path as osp
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

LINEAR = {
    'DINOv2 ViT-S/14': 'configs/ade20k_vits14_linear.py',
    'DINOv2 ViT-L/14': 'configs/ade20k_vitl14_linear.py',
    'DINOv3 ViT-S/16': 'configs/dinov3/ade20k_vits16_linear.py',
    'DINOv3 ViT-L/16': 'configs/dinov3/ade20k_vitl16_linear.py',
}
EOMT = {
    'DINOv2': 'configs/ade20k_vitl14_eomt.py',
    'DINOv3': 'configs/dinov3/ade20k_vitl16_eomt.py',
}
SLIDE = ['--mode', 'slide', '--size', '512', '512', '--repeat', '10']


def gpu_rows() -> List[Tuple[str, List[str], float]]:
    """(name, tools/benchmark.py arguments, estimated seconds on an H100 /
    H200, imports excluded), cheapest and most wanted first."""
    rows = []
    for name, config in LINEAR.items():
        for batch in (1, 8):
            for amp in ([], ['--amp']):
                precision = 'bf16' if amp else 'fp32'
                rows.append((f'{name} linear, batch {batch}, {precision}', [
                    config, *SLIDE, '--warmup', '2', '--batch',
                    str(batch), *amp
                ], 12 if 'ViT-L' in name else 6))
    for name, config in EOMT.items():
        rows.append((f'EoMT-L ({name}) bf16 eager',
                     [config, *SLIDE, '--warmup', '2', '--amp'], 15))
    rows.append(('Mask2Former ViT-S (DINOv2 pyramid) bf16', [
        'configs/ade20k_vits14_m2f.py', *SLIDE[:-1], '5', '--warmup', '1',
        '--amp'
    ], 20))
    for name in ('DINOv2 ViT-S/14', 'DINOv2 ViT-L/14'):
        rows.append((f'{name} dataset, 200 images, batch 8, bf16', [
            LINEAR[name], '--mode', 'dataset', '--images', '200', '--batch',
            '8', '--amp', '--repeat', '1', '--warmup', '0'
        ], 45 if 'ViT-L' in name else 30))
    rows.append(('DINOv2 ViT-L/14 backbone MFU, bf16, compiled', [
        LINEAR['DINOv2 ViT-L/14'], '--mode', 'backbone', '--size', '518',
        '518', '--batch', '8', '--amp', '--compile', '--repeat', '10',
        '--warmup', '3'
    ], 60))
    for name, config in EOMT.items():
        rows.append((f'EoMT-L ({name}) bf16 compiled',
                     [config, *SLIDE, '--warmup', '2', '--amp',
                      '--compile'], 70))
    return rows


# The rehearsal: forks of the same configs with a 4-block, 48-wide ViT,
# images resized to a short side of 56 (one to three 56-pixel windows).
TINY_FORK = """_base_ = [{base!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dim=48, depth=4,
                            num_heads=3, ffn='mlp', num_register_tokens=0,
                            interpolate_offset=0.1,
                            interpolate_antialias=False)),
    decode_head=dict(in_channels=[48]),
    test_cfg=dict(crop_size=(56, 56), stride=(37, 37), window_batch_size=8))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(99999999, 56), keep_ratio=True),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(pipeline=test_pipeline))
"""


def rehearsal_rows(folder: str) -> List[Tuple[str, List[str], float]]:
    config = osp.join(folder, 'tiny_linear.py')
    with open(config, 'w') as file:
        file.write(
            TINY_FORK.format(base=osp.abspath(LINEAR['DINOv2 ViT-S/14'])))
    small = ['--device', 'cpu', '--repeat', '1', '--warmup', '0']
    return [
        ('tiny linear, batch 1, fp32',
         [config, '--mode', 'slide', '--size', '56', '84', *small], 10),
        ('tiny linear, batch 2, bf16', [
            config, '--mode', 'slide', '--size', '56', '84', '--batch', '2',
            '--amp', *small
        ], 10),
        ('tiny dataset, 3 images, batch 3, bf16', [
            config, '--mode', 'dataset', '--images', '3', '--batch', '3',
            '--amp', *small
        ], 30),
    ]


def run_rows(rows, out: str, status: str, budget_s: float) -> int:
    """Each row through tools/benchmark.py's main, within ``budget_s``."""
    from dinov2_seg.cli.benchmark import main
    deadline = time.monotonic() + budget_s
    failures = 0
    for name, args, estimate in rows:
        left = deadline - time.monotonic()
        start = time.monotonic()
        if estimate > left:
            outcome = (f'skipped: needs about {estimate:.0f} s, '
                       f'{left:.0f} s left')
        else:
            try:
                main([*args, '--out', out])
                outcome = 'ok'
            except Exception as error:  # a failed row must not stop the rest
                failures += 1
                outcome = f'error: {type(error).__name__}: {error}'[:300]
        seconds = time.monotonic() - start
        print(
            f'[gpu-check] row {name}: {outcome} ({seconds:.1f} s)', flush=True)
        with open(status, 'a') as file:
            file.write(f'{name}\t{outcome}\t{seconds:.1f}\n')
    return 1 if failures else 0


def read_tsv(path: str) -> List[List[str]]:
    if not osp.isfile(path):
        return []
    with open(path) as file:
        return [line.rstrip('\n').split('\t') for line in file if line.strip()]


def row_figures(record: dict) -> str:
    keys = ('images_per_second', 'backbone_ratio', 'mfu', 'peak_bytes')
    figures = []
    for key in keys:
        if record.get(key) is not None:
            value = record[key]
            figures.append(f'{key} {value:.4g}'
                           if isinstance(value, float) else f'{key} {value}')
    return ', '.join(figures)


def summary(steps: str, rows: str, results: str) -> str:
    """The markdown summary: steps (status, seconds), then the rows with
    the figures of their JSON lines (in the order they were written)."""
    lines = ['| step | status | seconds |', '|---|---|---|']
    lines += [f'| {s[0]} | {s[1]} | {s[2]} |' for s in read_tsv(steps)]
    records = []
    if osp.isfile(results):
        with open(results) as file:
            records = [json.loads(line) for line in file if line.strip()]
    lines += ['', '| row | status | seconds | figures |', '|---|---|---|---|']
    measured = iter(records)
    for name, outcome, seconds in read_tsv(rows):
        figures = row_figures(next(measured, {})) if outcome == 'ok' else ''
        lines.append(f'| {name} | {outcome} | {seconds} | {figures} |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['run', 'summary'])
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--budget-s', type=float, default=300)
    parser.add_argument('--rehearse', action='store_true')
    args = parser.parse_args(argv)
    results = osp.join(args.out_dir, 'benchmarks.jsonl')
    status = osp.join(args.out_dir, 'rows.tsv')
    if args.command == 'summary':
        text = summary(osp.join(args.out_dir, 'steps.tsv'), status, results)
        with open(osp.join(args.out_dir, 'summary.md'), 'w') as file:
            file.write(text)
        print(text, end='')
        return 0
    with tempfile.TemporaryDirectory() as folder:
        rows = rehearsal_rows(folder) if args.rehearse else gpu_rows()
        return run_rows(rows, results, status, args.budget_s)


if __name__ == '__main__':
    sys.exit(main())
