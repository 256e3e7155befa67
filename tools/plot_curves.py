"""Plot training curves: python tools/plot_curves.py WORK_DIR [WORK_DIR ...]
[--keys loss lr mIoU] [--labels A B] [--out curves.png]"""
import sys

from dinov2_seg.cli import plot_curves

if __name__ == '__main__':
    sys.exit(plot_curves.main())
