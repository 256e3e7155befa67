"""Sweep a config: python tools/sweep.py CONFIG --set KEY=V1,V2 --seeds 0,1"""
import sys

from dinov2_seg.cli import sweep

if __name__ == '__main__':
    sys.exit(sweep.main())
