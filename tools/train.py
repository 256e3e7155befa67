"""Train a segmentor: python tools/train.py CONFIG [--work-dir DIR] ..."""
from dinov2_seg.apis import train

if __name__ == '__main__':
    train.main()
