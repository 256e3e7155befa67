"""``tools/benchmark.py``: speed and memory of a config's model, fast paths
against mmseg's stock ones measured side by side in one process (the modes:
:mod:`dinov2_seg.benchmark.modes`). The last line printed is one JSON
object, also appended to ``--out``."""
import argparse
import json
import os
import os.path as osp
import time
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope

from dinov2_seg.benchmark.modes import MEASURES
from dinov2_seg.engine.run_config import load_config


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Speed and memory of a config\'s model; --compare times '
        'the stock path in the same run.')
    parser.add_argument('config')
    parser.add_argument('--mode', choices=sorted(MEASURES), default='slide')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='image size (slide, tta) or window/crop size (backbone, '
        'train); default: the slide crop size')
    parser.add_argument(
        '--scales',
        type=int,
        default=None,
        help='tta: number of scales; dataset: the multi-scale flip test '
        '(tools/test.py --tta) with this many scales')
    parser.add_argument(
        '--batch',
        type=int,
        default=1,
        help='images per test step (slide, tta, dataset) / training step, '
        'windows per backbone call (backbone)')
    parser.add_argument(
        '--images',
        type=int,
        default=16,
        help='dataset: images generated (mixed sizes as ADE20K: short side '
        '256-512, aspect 0.5-2, seeded) and evaluated per timed run')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='inference: bfloat16 autocast of the backbone (float16 on GPUs '
        'without bfloat16), as tools/test.py --amp; train: '
        'AmpOptimWrapper, as tools/train.py --amp')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        choices=['cuda', 'cpu'])
    parser.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the backbone as tools/test.py --compile does '
        '(the warm-up compiles; slide, tta, dataset: the fast path; onnx: '
        'also times the compiled network)')
    parser.add_argument(
        '--quantize',
        action='store_true',
        help='onnx: also time ONNX Runtime dynamic int8 quantisation and '
        'its label agreement with float32')
    parser.add_argument(
        '--compare',
        action='store_true',
        help='also run the baseline (stock mmseg path; train: frozen=False; '
        'dataset: one image per step)')
    parser.add_argument(
        '--against',
        metavar='CONFIG',
        help='slide, tta: also time this config\'s model (its fast path, '
        'random weights) on the same images, e.g. the Mask2Former config '
        'against an EoMT one')
    parser.add_argument(
        '--repeat', type=int, default=3, help='timed runs (median)')
    parser.add_argument(
        '--warmup', type=int, default=1, help='untimed runs before')
    parser.add_argument(
        '--checkpoint', help='weights to load (default: random)')
    parser.add_argument(
        '--peak-tflops',
        type=float,
        help='dense bf16 peak of the GPU for the FLOPs utilisation '
        '(known: H100, H200, A100)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    parser.add_argument(
        '--out',
        default='work_dirs/benchmark/results.jsonl',
        help='results file; one JSON line is appended per run')
    args = parser.parse_args(argv)
    if min(args.batch, args.repeat, args.images) < 1 or args.warmup < 0:
        parser.error('--batch, --images and --repeat must be >= 1, '
                     '--warmup >= 0')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    torch.manual_seed(0)
    record = dict(
        config=args.config,
        mode=args.mode,
        device=args.device,
        gpu=torch.cuda.get_device_name() if args.device == 'cuda' else None,
        batch=args.batch,
        scales=args.scales,
        amp=args.amp,
        compile=args.compile,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        time=time.strftime('%Y-%m-%d %H:%M:%S'))
    record.update(MEASURES[args.mode](cfg, args))
    line = json.dumps(record)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'a') as results:
        results.write(line + '\n')
    print(line)
    return 0
