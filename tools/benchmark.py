"""Inference memory and speed of one test window of a config's model:
python tools/benchmark.py CONFIG [--device cuda|cpu|meta] [--size H W]
[--fp16] [--out work_dirs/benchmark/results.jsonl]"""
import sys

from dinov2_seg.cli.benchmark import main

if __name__ == '__main__':
    sys.exit(main())
