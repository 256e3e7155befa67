"""Train a segmentor: python tools/train.py CONFIG [--work-dir DIR] ..."""
from dinov2_seg.cli import train

if __name__ == '__main__':
    train.main()
