"""``tools/check_official_m2f_config.py``: compare our official ViT-g
Mask2Former config with Meta's ``dinov2_vitg14_ade20k_m2f_config.py``; exit
status 1 if a setting differs."""
import argparse
from typing import Optional, Sequence

from mmengine.config import Config

from dinov2_seg.checkpoints.meta_m2f_config import (compare_m2f_configs,
                                                    show_setting)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Check configs/ade20k_vitg14_m2f_official.py against '
        "Meta's dinov2_vitg14_ade20k_m2f_config.py (download it from "
        'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/'
        'dinov2_vitg14_ade20k_m2f_config.py).')
    parser.add_argument('official', help="Meta's _m2f_config.py")
    parser.add_argument(
        '--config',
        default='configs/ade20k_vitg14_m2f_official.py',
        help='our config to check')
    args = parser.parse_args(argv)
    rows = compare_m2f_configs(
        Config.fromfile(args.official), Config.fromfile(args.config))
    width = max(len(r['name']) for r in rows)
    for row in rows:
        mark = 'ok  ' if row['same'] else 'DIFF'
        print(f"{mark} {row['name']:<{width}}  official "
              f"{show_setting(row['official'])}  ours "
              f"{show_setting(row['ours'])}")
    differing = [r['name'] for r in rows if not r['same']]
    if differing:
        print(f'{len(differing)} setting(s) differ or were not found: '
              f'{", ".join(differing)}. Set them in {args.config} (or with '
              '--cfg-options) before evaluating.')
        return 1
    print('All settings match.')
    return 0
