"""Naming the DINOv2 preset a backbone state_dict looks like, for error
messages about files of another size."""
import re
from typing import Mapping, Optional

from torch import Tensor

from dinov2_seg.arch_settings import ARCH_SETTINGS

_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')


def describe_arch(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Name the preset a state_dict in Meta's layout looks like (e.g.
    ``vitb14_reg4``), or list its settings when none fits; None when it is
    not a DINOv2 backbone at all."""
    if 'cls_token' not in state_dict:
        return None
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state_dict) if m}
    registers = state_dict.get('register_tokens')
    found = dict(
        embed_dim=state_dict['cls_token'].shape[-1],
        depth=max(blocks) + 1 if blocks else 0,
        num_register_tokens=0 if registers is None else registers.shape[1])
    for name, settings in ARCH_SETTINGS.items():
        if all(settings[k] == v for k, v in found.items()):
            return name
    return ', '.join(f'{k}={v}' for k, v in found.items())
