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

from .inference import (inference_segmentor, init_segmentor,
                        overlay_segmentation, summarize)

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


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    model = init_segmentor(args.config, args.checkpoint, args.backbone,
                           args.scales, args.device, args.cfg_options)
    classes = model.dataset_meta['classes']
    palette = model.dataset_meta['palette']
    if len(classes) > 256:
        raise ValueError('palette PNGs hold at most 256 classes')
    os.makedirs(args.out_dir, exist_ok=True)
    paths = expand_inputs(args.images)
    failed, lines = [], []
    progress = ProgressBar(len(paths))
    for path in paths:
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:  # reported, the batch goes on
            failed.append(f'{path}: {error}')
        else:
            labels = inference_segmentor(model, image)
            stem = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0])
            save_label_png(labels, palette, f'{stem}.png')
            overlay = overlay_segmentation(image, labels, model.dataset_meta,
                                           args.opacity)
            cv2.imwrite(f'{stem}_overlay.jpg', overlay[..., ::-1])
            lines.append(f'{path}: ' + ', '.join(summarize(labels, classes)))
        progress.update()
    print()
    for line in lines:
        print(line)
    for line in failed:
        print(f'skipped {line}')
    print(f'{len(lines)} segmented, {len(failed)} skipped -> {args.out_dir}')
    return 0 if lines else 1
