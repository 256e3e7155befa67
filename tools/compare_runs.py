"""Compare runs: python tools/compare_runs.py SWEEP_DIR_OR_WORK_DIRS...
[--baseline RUN] [--metric mIoU] [--out DIR]"""
from dinov2_seg.cli import compare_runs

if __name__ == '__main__':
    compare_runs.main()
