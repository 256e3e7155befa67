"""``tools/inference.py``: segment images with a config and a checkpoint."""
import argparse
import glob
import os
import os.path as osp
from typing import List, Optional

import cv2
import mmcv
import numpy as np
from mmengine.config import DictAction
from mmengine.utils import ProgressBar
from PIL import Image

from torch.utils.data import DataLoader, Dataset

from .inference import (inference_inputs, init_segmentor,
                        overlay_segmentation, segment_batch, summarize)

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Segment images with a DINOv2 segmentor')
    parser.add_argument(
        'images', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('--config', required=True, help='config file')
    parser.add_argument(
        '--checkpoint',
        required=True,
        help="a training checkpoint or one of Meta's *_head.pth files")
    parser.add_argument(
        '--backbone',
        help="DINOv2 backbone file (default: the config's, "
        'e.g. checkpoints/dinov2_vits14_pretrain.pth)')
    parser.add_argument(
        '--scales',
        type=int,
        help='multi-scale + flip test with the first N scales of an ms '
        "config (the official notebook's HEAD_SCALE_COUNT, 1..5); "
        'default: single scale')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision (bfloat16 where supported, else float16)')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=1,
        help='images per forward pass (their slide windows are batched)')
    parser.add_argument(
        '--workers',
        type=int,
        default=2,
        help='processes reading and resizing images ahead of the model')
    parser.add_argument(
        '--opacity', type=float, default=0.5, help='overlay opacity')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, as for tools/test.py')
    return parser.parse_args(argv)


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files as given, folders' images (recursively, sorted), glob matches;
    a pattern matching nothing is kept so that it is reported."""
    found = []
    for pattern in patterns:
        if osp.isdir(pattern):
            for root, _, names in sorted(os.walk(pattern)):
                found += [
                    osp.join(root, n) for n in sorted(names)
                    if n.lower().endswith(IMAGE_SUFFIXES)
                ]
        elif glob.has_magic(pattern):
            found += sorted(glob.glob(pattern, recursive=True)) or [pattern]
        else:
            found.append(pattern)
    return found


def read_image(path: str) -> np.ndarray:
    """BGR image as cv2 reads it; OSError/ValueError if it cannot be."""
    if not osp.isfile(path):
        raise FileNotFoundError('no such file')
    image = mmcv.imread(path)
    if image is None:
        raise ValueError('not a readable image')
    return image


def save_label_png(labels: np.ndarray, palette: list, path: str) -> None:
    """An 8-bit palette PNG: pixel values are class indices, shown in the
    dataset's colours."""
    image = Image.fromarray(labels.astype(np.uint8), mode='P')
    image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    image.save(path)


class ImageFiles(Dataset):
    """Images read and run through the inference pipeline in the loader's
    worker processes; an unreadable file yields its error instead."""

    def __init__(self, paths: List[str], pipeline: list):
        self.paths = paths
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:  # reported, the batch goes on
            return dict(path=path, error=str(error))
        return dict(
            path=path,
            image=image,
            inputs=inference_inputs(self.pipeline, image))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        raise ValueError('--batch-size must be >= 1 and --workers >= 0')
    model = init_segmentor(
        args.config,
        args.checkpoint,
        args.backbone,
        args.scales,
        args.device,
        args.cfg_options,
        amp=args.amp)
    classes = model.dataset_meta['classes']
    palette = model.dataset_meta['palette']
    if len(classes) > 256:
        raise ValueError('palette PNGs hold at most 256 classes')
    os.makedirs(args.out_dir, exist_ok=True)
    paths = expand_inputs(args.images)
    loader = DataLoader(
        ImageFiles(paths, model.pipeline),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=list)
    failed, lines = [], []
    progress = ProgressBar(len(paths))
    for batch in loader:
        failed += [f"{item['path']}: {item['error']}" for item in batch
                   if 'error' in item]
        readable = [item for item in batch if 'error' not in item]
        labels = segment_batch(model, [item['inputs'] for item in readable
                                       ]) if readable else []
        for item, label in zip(readable, labels):
            stem = osp.join(args.out_dir,
                            osp.splitext(osp.basename(item['path']))[0])
            save_label_png(label, palette, f'{stem}.png')
            overlay = overlay_segmentation(item['image'], label,
                                           model.dataset_meta, args.opacity)
            cv2.imwrite(f'{stem}_overlay.jpg', overlay[..., ::-1])
            lines.append(f"{item['path']}: " +
                         ', '.join(summarize(label, classes)))
        for _ in batch:
            progress.update()
    print()
    for line in lines:
        print(line)
    for line in failed:
        print(f'skipped {line}')
    print(f'{len(lines)} segmented, {len(failed)} skipped -> {args.out_dir}')
    return 0 if lines else 1
