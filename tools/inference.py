"""Segment images: python tools/inference.py IMAGES... --config C
--checkpoint HEAD [--backbone FILE] [--scales N] [--device cuda|cpu]
--out-dir DIR [--verbose]"""
import sys

from dinov2_seg.cli import inference

if __name__ == '__main__':
    sys.exit(inference.main())
