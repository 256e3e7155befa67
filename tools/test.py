"""Evaluate a checkpoint: python tools/test.py CONFIG CHECKPOINT [--tta] ..."""
from dinov2_seg.cli import test

if __name__ == '__main__':
    test.main()
