"""``tools/inference.py``: segment images with a config and a checkpoint."""
import argparse
import os
from typing import List, Optional

from mmengine.config import DictAction
from torch.utils.data import DataLoader

from dinov2_seg.apis.image_files import (ImageFiles, check_outputs_differ,
                                         expand_inputs, write_results)
from dinov2_seg.apis.inference import init_segmentor, segment_batch
from dinov2_seg.engine.console import quiet_console
from dinov2_seg.engine.hooks.progress_bar_hook import ProgressDisplay
from dinov2_seg.visualization.segmentation import largest_classes


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
        '--compile',
        action='store_true',
        help='torch.compile the backbone (compiled on the first windows, '
        'once per window size for calls of several windows and once for '
        'one, whatever the image sizes)')
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
        amp=args.amp,
        compile=args.compile)
    classes = model.dataset_meta['classes']
    if len(classes) > 256:
        raise ValueError('palette PNGs hold at most 256 classes')
    os.makedirs(args.out_dir, exist_ok=True)
    loader = DataLoader(
        ImageFiles(inputs, model.pipeline),
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=list,
        # collate_fn=list keeps the items as they are, which the pinning
        # thread walks (dicts, lists, tensors) all the same.
        pin_memory=str(args.device).startswith('cuda'))
    failed, written, segmented = [], [], 0
    # Without a terminal: one line at the end (and every minute), as the
    # results say what is done.
    progress = ProgressDisplay(
        'segment', len(inputs), 0, 'images', 1.0, every_seconds=60)
    try:
        for batch in loader:
            failed += [
                f"{item['path']}: {item['error']}" for item in batch
                if 'error' in item
            ]
            readable = [item for item in batch if 'error' not in item]
            labels = segment_batch(model,
                                   [item['inputs']
                                    for item in readable]) if readable else []
            for item, label in zip(readable, labels):
                try:
                    files = write_results(item, label, model.dataset_meta,
                                          args.out_dir, args.opacity)
                except OSError as error:
                    failed.append(f"{item['path']}: {error}")
                    continue
                written += files
                segmented += 1
                shares = ', '.join(largest_classes(label, classes))
                print(f"{item['path']}: {shares} -> {files[0]}")
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
