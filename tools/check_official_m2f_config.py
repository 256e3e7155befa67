"""Compare our official ViT-g Mask2Former config with Meta's
dinov2_vitg14_ade20k_m2f_config.py; exit status 1 if a setting differs."""
import sys

from dinov2_seg.cli.check_official_m2f_config import main

if __name__ == '__main__':
    sys.exit(main())
