"""``tools/inference.py``: segment images with a config and a checkpoint."""
import argparse
import glob
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import cv2
import mmcv
import numpy as np
from mmengine.config import DictAction
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dinov2_seg.engine.console import quiet_console
from dinov2_seg.engine.hooks.progress_bar_hook import ProgressDisplay

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
    parser.add_argument(
        '--out-dir',
        required=True,
        help='output folder (images found in a folder keep their path '
        'below it)')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help="show the libraries' log lines and warnings too")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, as for tools/test.py')
    return parser.parse_args(argv)


def _fixed_part(pattern: str) -> str:
    """The folder a glob pattern starts from: its parts before the first
    wildcard ('photos' for 'photos/**/*.jpg')."""
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or os.curdir


def expand_inputs(patterns: List[str]) -> List[Tuple[str, str]]:
    """(file, name) pairs: files as given, folders' images (recursively,
    sorted), glob matches; a pattern matching nothing is kept so that it is
    reported. ``name`` is where the results go under ``--out-dir``, without
    suffix: the path below the folder (or the glob's fixed part), so that
    same-named images of different sub-folders stay apart; a file's name.
    A file given twice is kept once."""
    found = []
    for pattern in patterns:
        if osp.isdir(pattern):
            for root, _, names in sorted(os.walk(pattern)):
                found += [(osp.join(root, n),
                           osp.relpath(osp.join(root, n), pattern))
                          for n in sorted(names)
                          if n.lower().endswith(IMAGE_SUFFIXES)]
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            base = _fixed_part(pattern)
            found += [(m, osp.relpath(m, base))
                      for m in matches] or [(pattern, osp.basename(pattern))]
        else:
            found.append((pattern, osp.basename(pattern)))
    unique, seen = [], set()
    for path, name in found:
        if osp.abspath(path) not in seen:
            seen.add(osp.abspath(path))
            unique.append((path, osp.splitext(name)[0]))
    return unique


def check_outputs_differ(inputs: List[Tuple[str, str]], out_dir: str) -> None:
    """Refuse inputs whose results would overwrite each other's.

    Raises:
        ValueError: naming the inputs and the file they would share.
    """
    by_name: Dict[str, List[str]] = {}
    for path, name in inputs:
        by_name.setdefault(osp.normcase(name), []).append(path)
    clashes = [(name, paths) for name, paths in by_name.items()
               if len(paths) > 1]
    if clashes:
        listed = '; '.join(
            f"{' and '.join(paths)} -> {osp.join(out_dir, name)}.png"
            for name, paths in clashes[:5])
        raise ValueError(
            f'{len(clashes)} output file(s) would be written by more than '
            f'one input ({listed}). Give the folder that holds them (its '
            'sub-folders are kept under --out-dir), rename them, or run them '
            'with separate --out-dir.')


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


def write_results(item: dict, labels: np.ndarray, model,
                  args: argparse.Namespace) -> List[str]:
    """The label PNG and the overlay of one image; the files written.

    Raises:
        OSError: naming a file that could not be written.
    """
    stem = osp.join(args.out_dir, item['name'])
    os.makedirs(osp.dirname(stem), exist_ok=True)
    label_file, overlay_file = f'{stem}.png', f'{stem}_overlay.jpg'
    save_label_png(labels, model.dataset_meta['palette'], label_file)
    overlay = overlay_segmentation(item['image'], labels, model.dataset_meta,
                                   args.opacity)
    # cv2 reports a failed write by its return value only.
    if not cv2.imwrite(overlay_file, overlay[..., ::-1]):
        raise OSError(f'could not write {overlay_file}')
    return [label_file, overlay_file]


class ImageFiles(Dataset):
    """Images read and run through the inference pipeline in the loader's
    worker processes; an unreadable file yields its error instead."""

    def __init__(self, inputs: List[Tuple[str, str]], pipeline: list):
        self.inputs = inputs
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        path, name = self.inputs[index]
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:  # reported, the batch goes on
            return dict(path=path, error=str(error))
        return dict(
            path=path,
            name=name,
            image=image,
            inputs=inference_inputs(self.pipeline, image))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        raise ValueError('--batch-size must be >= 1 and --workers >= 0')
    inputs = expand_inputs(args.images)
    check_outputs_differ(inputs, args.out_dir)
    quiet_console(args.verbose)
    model = init_segmentor(
        args.config,
        args.checkpoint,
        args.backbone,
        args.scales,
        args.device,
        args.cfg_options,
        amp=args.amp)
    classes = model.dataset_meta['classes']
    if len(classes) > 256:
        raise ValueError('palette PNGs hold at most 256 classes')
    os.makedirs(args.out_dir, exist_ok=True)
    loader = DataLoader(
        ImageFiles(inputs, model.pipeline),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=list)
    failed, written, segmented = [], [], 0
    # Without a terminal: one line at the end (and every minute), as the
    # results say what is done.
    progress = ProgressDisplay(
        'segment', len(inputs), 0, 'images', 1.0, every_seconds=60)
    try:
        for batch in loader:
            failed += [f"{item['path']}: {item['error']}" for item in batch
                       if 'error' in item]
            readable = [item for item in batch if 'error' not in item]
            labels = segment_batch(model, [
                item['inputs'] for item in readable
            ]) if readable else []
            for item, label in zip(readable, labels):
                try:
                    files = write_results(item, label, model, args)
                except OSError as error:
                    failed.append(f"{item['path']}: {error}")
                    continue
                written += files
                segmented += 1
                print(f"{item['path']}: {', '.join(summarize(label, classes))}"
                      f' -> {files[0]}')
            progress.update(progress.completed + len(batch))
    finally:
        progress.finish()
    for line in failed:
        print(f'skipped {line}')
    # Counted from the files written, so the summary cannot claim more.
    print(f'{segmented} segmented, {len(failed)} skipped -> {args.out_dir} '
          f'({len(written)} files: a label map NAME.png and an overlay '
          'NAME_overlay.jpg per image)')
    return 0 if segmented else 1
