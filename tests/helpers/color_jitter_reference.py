"""torchvision's side of tests/test_eomt_color_jitter.py (run with
.venv-timm, which has torchvision; imports only torch and torchvision).

Reads ``{'images': [uint8 (3, H, W) RGB], 'plans': [[(name, factor)]]}``
and writes, for every image and plan, the image after torchvision's own
functional colour ops applied in the plan's order, as EoMT calls them.

Usage: color_jitter_reference.py CASES_PT OUTPUT_PT
"""
import sys

import torch
from torchvision.transforms.v2 import functional as F

OPS = dict(
    brightness=F.adjust_brightness,
    contrast=F.adjust_contrast,
    saturation=F.adjust_saturation,
    hue=F.adjust_hue)


def main(cases_path: str, output_path: str) -> None:
    cases = torch.load(cases_path)
    outputs = []
    for image in cases['images']:
        for plan in cases['plans']:
            out = image
            for name, factor in plan:
                out = OPS[name](out, factor)
            outputs.append(out)
    torch.save(outputs, output_path)


if __name__ == '__main__':
    main(*sys.argv[1:])
