"""What a run's work dir records, read back: the config it trained with
(mmengine dumps it to ``TIMESTAMP/vis_data/config.py``), the test metrics
(``tools/test.py`` logs them to ``TIMESTAMP/TIMESTAMP.json``, the per-class
table to ``TIMESTAMP/TIMESTAMP.log``), the training scalars
(``vis_data/scalars.json``) and, for sweep runs, ``sweep_run.json``."""
import glob
import json
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from mmengine.config import Config

from dinov2_seg.visualization.training_curves import Series, load_scalars
from .manifest import MANIFEST, RUN_FILE, flatten_config, read_json

METRICS = ('mIoU', 'mAcc', 'aAcc')
# A run folder mmengine names by its start time.
_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
_TABLE_ROW = re.compile(r'^\|\s*(.+?)\s*\|\s*([\d.]+|nan)\s*\|'
                        r'\s*([\d.]+|nan)\s*\|\s*$')


@dataclass
class RunRecord:
    """One run's settings and results (NaN / None where not recorded)."""
    work_dir: str
    settings: Dict[str, str]
    seed: Optional[int]
    test: Dict[str, float]
    best: Dict[str, float]
    iterations: Optional[int]
    train_seconds: Optional[float]
    peak_memory_mb: Optional[float]
    trainable_params: Optional[int]
    per_class_iou: Dict[str, float] = field(default_factory=dict)
    scalars: Dict[str, Series] = field(default_factory=dict)


def _run_folders(work_dir: str) -> List[str]:
    """The timestamped folders of a work dir, oldest first."""
    return sorted(
        p for p in glob.glob(osp.join(work_dir, '*'))
        if osp.isdir(p) and _TIMESTAMP.match(osp.basename(p)))


def is_run_dir(path: str) -> bool:
    return any(
        osp.isfile(osp.join(f, 'vis_data', 'config.py'))
        for f in _run_folders(path))


def find_run_dirs(paths: List[str]) -> List[str]:
    """The run work dirs in ``paths``: sweep folders (their manifest's runs,
    in grid order), work dirs, or folders of work dirs."""
    found: List[str] = []
    for path in paths:
        manifest = read_json(osp.join(path, MANIFEST))
        if manifest is not None:
            found += [
                r['work_dir'] for r in manifest['runs']
                if is_run_dir(r['work_dir'])
            ]
        elif is_run_dir(path):
            found.append(path)
        else:
            found += [
                p for p in sorted(glob.glob(osp.join(path, '*')))
                if is_run_dir(p)
            ]
    if not found:
        raise FileNotFoundError(
            f'No run work dirs in {paths}: a work dir of tools/train.py or '
            'tools/test.py holds TIMESTAMP/vis_data/config.py')
    return list(dict.fromkeys(found))


def _is_train_folder(folder: str) -> bool:
    return osp.isfile(osp.join(folder, 'vis_data', 'scalars.json'))


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The last test's aAcc, mIoU and mAcc (TIMESTAMP/TIMESTAMP.json)."""
    for folder in reversed(_run_folders(work_dir)):
        if _is_train_folder(folder):
            continue
        path = osp.join(folder, osp.basename(folder) + '.json')
        if osp.isfile(path):
            with open(path, encoding='utf-8') as file:
                metrics = json.load(file)
            if 'mIoU' in metrics:
                return {k: float(metrics[k]) for k in METRICS if k in metrics}
    return {}


def read_per_class_iou(work_dir: str) -> Dict[str, float]:
    """Per-class IoU of the last test: mmseg's IoUMetric logs it as a table
    (``| Class | IoU | Acc |``) and returns only the means."""
    for folder in reversed(_run_folders(work_dir)):
        if _is_train_folder(folder):
            continue
        log = osp.join(folder, osp.basename(folder) + '.log')
        if not osp.isfile(log):
            continue
        with open(log, encoding='utf-8', errors='replace') as file:
            text = file.read()
        start = text.rfind('per class results:')
        if start < 0:
            continue
        table = {}
        for line in text[start:].splitlines()[1:]:
            match = _TABLE_ROW.match(line.strip())
            if match and match.group(1) != 'Class':
                table[match.group(1)] = float(match.group(2))
            elif table and not line.startswith(('|', '+')):
                break
        return table
    return {}


def _train_config(work_dir: str) -> Config:
    folders = _run_folders(work_dir)
    train = [f for f in folders if _is_train_folder(f)] or folders
    return Config.fromfile(
        osp.join(train[-1], 'vis_data', 'config.py'),
        import_custom_modules=False)


def read_run(work_dir: str) -> RunRecord:
    """Everything :mod:`dinov2_seg.sweep.compare` tabulates for a run."""
    cfg = _train_config(work_dir)
    settings = flatten_config(cfg.to_dict())
    seed = cfg.get('randomness', {}).get('seed')
    has_train = any(_is_train_folder(f) for f in _run_folders(work_dir))
    scalars = load_scalars(work_dir) if has_train else {}
    best = {
        k: float(np.max(scalars[k][1]))
        for k in METRICS if k in scalars and len(scalars[k][1])
    }
    iterations = int(scalars['loss'][0][-1]) if 'loss' in scalars else None
    train_seconds = None
    if 'time' in scalars and iterations:
        # mmengine logs the mean time per iteration of each window.
        train_seconds = float(np.mean(scalars['time'][1])) * iterations
    record = read_json(osp.join(work_dir, RUN_FILE)) or {}
    memory = (
        float(np.max(scalars['memory'][1]))
        if 'memory' in scalars else record.get('peak_memory_mb'))
    return RunRecord(
        work_dir=work_dir,
        settings=settings,
        seed=seed,
        test=read_test_metrics(work_dir),
        best=best,
        iterations=iterations,
        train_seconds=record.get('train_seconds', train_seconds),
        peak_memory_mb=memory,
        trainable_params=record['trainable_params']
        if 'trainable_params' in record else count_trainable_params(cfg),
        per_class_iou=read_per_class_iou(work_dir),
        scalars=scalars)


def count_trainable_params(cfg: Config) -> Optional[int]:
    """Trainable parameters of the config's model, built on the ``meta``
    device (no memory, no weights: any size is counted at once). None
    where the model cannot be built here."""
    import torch
    try:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        import dinov2_seg.models  # noqa: F401  (registers the modules)
        register_all_modules(init_default_scope=False)
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
    except Exception:  # e.g. a custom module of another package
        return None
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
