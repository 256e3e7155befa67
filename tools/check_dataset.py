"""Check a config's data: python tools/check_dataset.py CONFIG
[--split train|val|all] [--workers N]"""
import sys

from dinov2_seg.cli import check_dataset

if __name__ == '__main__':
    sys.exit(check_dataset.main())
