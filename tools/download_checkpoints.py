"""Download Meta's released DINOv2 files into checkpoints/.

python tools/download_checkpoints.py --list
python tools/download_checkpoints.py dinov2_vits14_pretrain.pth \
    dinov2_vits14_ade20k_ms_head.pth
python tools/download_checkpoints.py 'dinov2_vitb14*'   # shell-style patterns
"""
import sys

from dinov2_seg.cli.download_checkpoints import main

if __name__ == '__main__':
    sys.exit(main())
