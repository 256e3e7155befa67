"""``tools/export_onnx.py``: export the network of one slide window to ONNX
and check it against PyTorch with onnxruntime."""
import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import DictAction

from dinov2_seg.apis.inference import init_segmentor
from dinov2_seg.deployment.onnx_export import (MIN_OPSET, check_exportable,
                                               compare_with_onnxruntime,
                                               export_onnx, random_windows)
from dinov2_seg.engine.console import quiet_console
from dinov2_seg.engine.run_config import load_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the network of one slide window of a segmentor '
        '(DINOv2 / DINOv3 with a linear or ms head, Mask2Former or EoMT) to '
        'ONNX and check it with onnxruntime')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        help="a training checkpoint, one of Meta's *_head.pth files or an "
        "EoMT release (the DINOv2 .bin, or the DINOv3 delta file)")
    parser.add_argument(
        '--backbone',
        help="backbone file (default: the config's; for head files and "
        "EoMT's DINOv3 deltas: the base file they add to)")
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="window size (default: the config's slide crop size)")
    parser.add_argument(
        '--opset',
        type=int,
        default=MIN_OPSET,
        help='ONNX opset (default: %(default)s, the lowest torch.onnx writes)')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-3,
        help='largest accepted |ONNX - PyTorch| logit difference '
        '(default: %(default)s)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, as for tools/test.py')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help="show the libraries' log lines and warnings too")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    quiet_console(args.verbose)
    cfg = load_config(args.config, args.cfg_options)
    # Before loading any weights: a Mask2Former file is large.
    check_exportable(cfg.model)
    model = init_segmentor(cfg, args.checkpoint, args.backbone)
    size = tuple(
        args.size or model.cfg.model.test_cfg.get(
            'crop_size', model.cfg.model.data_preprocessor.size))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    frozen = export_onnx(model, args.out, size, args.opset)
    print(f'Exported {type(model.backbone).__name__}('
          f'{getattr(model.backbone, "arch", "")}) + '
          f'{type(model.decode_head).__name__} '
          f'({model.decode_head.num_classes} classes), '
          f'{size[0]}x{size[1]} windows -> {args.out} '
          f'({osp.getsize(args.out) / 2**20:.1f} MiB)')
    if frozen:
        print('Constants of the window size: ' + '; '.join(frozen))
    difference = compare_with_onnxruntime(model, args.out,
                                          random_windows(size))
    verdict = 'OK' if difference <= args.tolerance else 'FAILED'
    print(f'onnxruntime vs PyTorch on 2 random windows: max |difference| of '
          f'the logits {difference:.2e} (tolerance {args.tolerance:.0e}): '
          f'{verdict}')
    return 0 if verdict == 'OK' else 1
