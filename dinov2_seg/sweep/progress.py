"""A run's progress as its files show it: the state in ``sweep_run.json``
and the last iteration and validation mIoU in the ``scalars.json`` that
mmengine's LocalVisBackend appends to while it trains."""
import glob
import json
import os.path as osp
from typing import Optional, Tuple

from .manifest import read_json, run_file


def _last_scalars(work_dir: str) -> Tuple[Optional[int], Optional[float]]:
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    iteration, miou = None, None
    for path in files:
        with open(path, encoding='utf-8') as file:
            for line in file:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # being written
                    continue
                if 'mIoU' in entry:
                    miou = entry['mIoU']
                elif 'iter' in entry:
                    iteration = entry['iter']
    return iteration, miou


def progress_line(run: dict) -> str:
    """``NAME  running  iter 40/150  mIoU 61.2`` (what is known)."""
    record = read_json(run_file(run['work_dir'])) or {}
    state = record.get('state', 'pending')
    parts = [run['name'], state]
    if state == 'running' and record.get('phase') == 'test':
        parts.append('testing')
    iteration, miou = _last_scalars(run['work_dir'])
    if iteration is not None:
        total = run.get('max_iters')
        parts.append(f'iter {iteration}' + (f'/{total}' if total else ''))
    results = record.get('results') or {}
    if 'mIoU' in results:
        parts.append(f'test mIoU {results["mIoU"]:.2f}')
    elif miou is not None:
        parts.append(f'val mIoU {miou:.2f}')
    if record.get('error') and state != 'done':
        parts.append(f'({record["error"]})')
    return '  '.join(parts)
