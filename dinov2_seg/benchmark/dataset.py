"""``--mode dataset``: the evaluation of ``tools/test.py`` (the config's
test dataloader, ``model.test_step`` and its test evaluator) timed on a
generated folder of images of mixed sizes with annotations."""
import argparse
import copy
import inspect
import os
import os.path as osp
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from mmseg.registry import DATASETS, MODELS
from torch import nn

from dinov2_seg.datasets import DinoLoadAnnotations
from dinov2_seg.datasets.pipelines import (select_tta_scales, set_label_checks,
                                           test_dataset_meta)
from .inputs import build_for_benchmark, synthetic_image
from .timing import (backbone_only_run, compare_runs, recording_windows,
                     timing_backbone)


def mixed_sizes(
    count: int,
    seed: int = 0,
    short_side: Tuple[int, int] = (256, 512),
    aspect: Tuple[float, float] = (0.5, 2.0)
) -> List[tuple]:
    """(height, width) of ``count`` images as ADE20K's validation images
    vary: short side uniform in ``short_side``, aspect ratio (width over
    height) log-uniform in ``aspect``, seeded."""
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(count):
        short = int(rng.integers(short_side[0], short_side[1] + 1))
        ratio = float(np.exp(rng.uniform(*np.log(aspect))))
        long = int(round(short * max(ratio, 1 / ratio)))
        sizes.append((short, long) if ratio >= 1 else (long, short))
    return sizes


def write_eval_folder(root: str,
                      sizes: List[tuple],
                      num_classes: int,
                      reduce_zero_label: bool,
                      img_suffix: str = '.jpg',
                      seg_map_suffix: str = '.png',
                      seed: int = 0) -> str:
    """Images (``images/NAME<img_suffix>``), label maps of blocks of
    random classes as the dataset stores them (``annotations/``; class c
    as c + 1 when the dataset reduces label 0, some pixels ignored) and a
    list of the names (``list.txt``) under ``root``; returns the list's
    path."""
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    names = []
    for index, (height, width) in enumerate(sizes):
        name = f'img_{index:05d}'
        names.append(name)
        mmcv.imwrite(
            synthetic_image(height, width, seed=seed + index),
            osp.join(root, 'images', name + img_suffix))
        # Blocks of 32 pixels: regions as large as objects, edges that
        # the resizes move.
        cells = rng.integers(0, num_classes + 1,
                             (height // 32 + 1, width // 32 + 1))
        label = np.kron(cells, np.ones((32, 32), np.int64))[:height, :width]
        if reduce_zero_label:  # 0: ignored, class c stored as c + 1
            stored = label
        else:  # the extra value: ignored (255)
            stored = np.where(label == num_classes, 255, label)
        mmcv.imwrite(
            stored.astype(np.uint8),
            osp.join(root, 'annotations', name + seg_map_suffix))
    path = osp.join(root, 'list.txt')
    with open(path, 'w') as names_file:
        names_file.write('\n'.join(names) + '\n')
    return path


def _dataset_default(dataset: dict, key: str, default):
    if key in dataset:
        return dataset[key]
    parameter = inspect.signature(DATASETS.get(
        dataset['type']).__init__).parameters.get(key)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return default
    return parameter.default


def eval_loader_cfg(cfg: Config, root: str, images: int, batch: int,
                    pipeline: list) -> dict:
    """The config's test dataloader on a folder written here."""
    loader = copy.deepcopy(cfg.test_dataloader)
    dataset = loader.dataset
    if 'type' not in dataset or dataset.type in ('ConcatDataset',
                                                 'RepeatDataset'):
        raise ValueError('--mode dataset needs a plain test dataset in '
                         'test_dataloader.dataset')
    num_classes = len(test_dataset_meta(cfg)['classes'])
    reduce_zero_label = _dataset_default(dataset, 'reduce_zero_label', False)
    img_suffix = _dataset_default(dataset, 'img_suffix', '.jpg')
    seg_map_suffix = _dataset_default(dataset, 'seg_map_suffix', '.png')
    write_eval_folder(root, mixed_sizes(images), num_classes,
                      reduce_zero_label, img_suffix, seg_map_suffix)
    pipeline = copy.deepcopy(pipeline)
    set_label_checks(pipeline, num_classes)  # as tools/test.py's loader
    dataset.update(
        data_root=root,
        data_prefix=dict(img_path='images', seg_map_path='annotations'),
        ann_file='list.txt',
        pipeline=pipeline)
    loader.batch_size = batch
    if loader.get('num_workers', 0) == 0:
        loader.persistent_workers = False
    return loader


def evaluation_run(model: nn.Module, loader, evaluator_cfg,
                   dataset_meta: dict) -> Callable[[], dict]:
    """One pass of tools/test.py's loop (mmengine's TestLoop: test_step
    without gradients, the evaluator fed batch by batch): returns the
    metrics and every image's labels by path."""
    evaluator = Evaluator(copy.deepcopy(evaluator_cfg))
    evaluator.dataset_meta = dataset_meta

    def run() -> dict:
        labels = {}
        with torch.no_grad():
            for data in loader:
                outputs = model.test_step(data)
                for sample in outputs:
                    labels[osp.basename(
                        sample.img_path)] = sample.pred_sem_seg.data.cpu()
                evaluator.process(data_samples=outputs, data_batch=data)
        return dict(
            metrics=evaluator.evaluate(len(loader.dataset)), labels=labels)

    return run


def time_label_checks(dataset, repeat: int, loads: int = 100) -> dict:
    """Seconds the label loader of ``dataset``'s pipeline takes for one
    pass over all its labels without its checks and with them, in this
    process: each timing covers at least ``loads`` label loads (passes
    repeated: the few labels of a run take milliseconds), the best of
    ``repeat`` (at least 3) alternations. Empty if the pipeline has no
    DinoLoadAnnotations at its top level."""
    found = [
        t for t in getattr(dataset.pipeline, 'transforms', [])
        if isinstance(t, DinoLoadAnnotations)
    ]
    if not found or not len(dataset):
        return {}
    checked = copy.deepcopy(found[0])
    unchecked = copy.deepcopy(checked)
    unchecked.check_labels = False
    infos = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        # The size check compares with the decoded image's (H, W).
        info['ori_shape'] = mmcv.imread(info['img_path']).shape[:2]
        infos.append(info)
    passes = -(-loads // len(infos))
    best = dict(unchecked=float('inf'), checked=float('inf'))
    for _ in range(max(repeat, 3)):
        for name, transform in (('unchecked', unchecked), ('checked',
                                                           checked)):
            start = time.perf_counter()
            for _ in range(passes):
                for info in infos:
                    transform(dict(info, seg_fields=[]))
            best[name] = min(best[name],
                             (time.perf_counter() - start) / passes)
    return dict(
        label_load_seconds=best['unchecked'],
        label_load_checked_seconds=best['checked'],
        label_check_ratio=best['checked'] / best['unchecked'])


def measure_dataset(cfg: Config, args: argparse.Namespace) -> dict:
    """Images per second of the test loop over ``--images`` generated
    images, ``--batch`` per step (``--compare``: also one by one, in the
    same run); the same windows through the backbone alone."""
    segmentor = build_for_benchmark(cfg, args.device, args.checkpoint)
    if not hasattr(segmentor, 'uses_fast_slide'):
        raise ValueError(f'{args.config}: model.type={cfg.model.type!r}; '
                         "--mode dataset needs 'BatchedEncoderDecoder'")
    segmentor.test_cfg.amp = args.amp
    segmentor.test_cfg.compile = args.compile
    if args.scales:  # the multi-scale flip test (tools/test.py --tta)
        cfg.tta_scale_count = args.scales
        pipeline = select_tta_scales(cfg, args.config)
        model = MODELS.build(dict(cfg.tta_model, module=segmentor))
    else:
        pipeline, model = cfg.test_pipeline, segmentor
    meta = test_dataset_meta(cfg)
    batches = {'batched': args.batch}
    if args.compare:
        batches['one_by_one'] = 1
    windows: List[tuple] = []
    inside: List[float] = []
    with tempfile.TemporaryDirectory() as root:
        loaders = {
            name:
            Runner.build_dataloader(
                eval_loader_cfg(cfg, osp.join(root, name), args.images, batch,
                                pipeline))
            for name, batch in batches.items()
        }
        runs: Dict[str, Callable] = {
            name: evaluation_run(model, loader, cfg.test_evaluator, meta)
            for name, loader in loaders.items()
        }
        runs['batched'] = recording_windows(
            segmentor,
            timing_backbone(segmentor, runs['batched'], args.device, inside),
            windows)
        # Before the backbone-only run: it replays the first run's windows.
        runs = dict(batched=runs.pop('batched'), **runs)
        runs['backbone'] = backbone_only_run(
            segmentor, windows, args.device, inference_mode=False)
        seconds, outputs = compare_runs(runs, args.device, args.repeat,
                                        args.warmup)
        label_checks = time_label_checks(loaders['batched'].dataset,
                                         args.repeat)
    record = dict(
        images=args.images,
        windows=sum(shape[0] for shape in windows),
        backbone_calls=len(windows),
        workers=cfg.test_dataloader.get('num_workers', 0),
        seconds=seconds['batched'],
        images_per_second=args.images / seconds['batched'],
        backbone_seconds=seconds['backbone'],
        backbone_images_per_second=args.images / seconds['backbone'],
        backbone_ratio=seconds['batched'] / seconds['backbone'],
        backbone_share=inside[-1] if inside else None,
        miou=_float(outputs['batched']['metrics'].get('mIoU')))
    if label_checks:
        # What the label checks add to the evaluation: their seconds over
        # the same labels, as a share of the timed test loop.
        label_checks['label_check_share'] = (
            label_checks['label_load_checked_seconds'] -
            label_checks['label_load_seconds']) / seconds['batched']
        record.update(label_checks)
    if args.compare:
        batched, single = outputs['batched'], outputs['one_by_one']
        same = total = 0
        for name, labels in single['labels'].items():
            other = batched['labels'][name]
            same += int((labels == other).sum())
            total += labels.numel()
        record.update(
            baseline_batch=1,
            baseline_seconds=seconds['one_by_one'],
            baseline_images_per_second=args.images / seconds['one_by_one'],
            batch_speedup=seconds['one_by_one'] / seconds['batched'],
            baseline_miou=_float(single['metrics'].get('mIoU')),
            label_agreement=same / total)
    return record


def _float(value) -> float:
    # IoUMetric's numbers are numpy floats, which json does not write.
    return None if value is None else float(value)
