"""Speed and memory of a config's model (modes: slide, tta, backbone,
train, dataset): python tools/benchmark.py CONFIG [--mode MODE]
[--device cuda|cpu] [--size H W] [--batch B] [--images N] [--compare]
[--amp] [--compile] [--out work_dirs/benchmark/results.jsonl]"""
import sys

from dinov2_seg.cli.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
