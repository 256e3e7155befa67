"""Convert Meta's ``dinov2_vitg14_ade20k_m2f.pth`` (ViT-g + ViT-Adapter +
Mask2Former, an mmseg 0.x / mmcv 1.x checkpoint) to this project's modules.

Pure functions from one state_dict to another. What differs:

* ViT blocks: Meta's segmentation ViT names LayerScale ``gamma1``/``gamma2``
  (ours ``ls1.gamma``/``ls2.gamma``, as in the backbone files) and keeps the
  SwiGLU input projections apart (``w1``, ``w2``; ours fused as ``w12``,
  first half gated).
* Mask2Former: mmcv 1.x transformer layers keep their attentions and FFNs in
  lists in operation order; mmdet 3.x names them. The decoder layers run
  cross-attention first, so ``attentions.0`` is ``cross_attn`` there, while
  the pixel decoder's encoder layers have a single self-attention.

Everything else (spatial prior, interactions, pixel decoder convolutions,
queries, classifier) has the same names in both.
"""
import re
from typing import Dict, Mapping

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]

_RENAMES = [
    (re.compile(r'^(backbone\.blocks\.\d+\.)gamma([12])$'), r'\1ls\2.gamma'),
    (re.compile(r'^(decode_head\.transformer_decoder\.layers\.\d+\.)'
                r'attentions\.0\.'), r'\1cross_attn.'),
    (re.compile(r'^(decode_head\.transformer_decoder\.layers\.\d+\.)'
                r'attentions\.1\.'), r'\1self_attn.'),
    (re.compile(r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+\.)'
                r'attentions\.0\.'), r'\1self_attn.'),
    (re.compile(r'^(decode_head\.(?:transformer_decoder|pixel_decoder\.'
                r'encoder)\.layers\.\d+\.)ffns\.0\.'), r'\1ffn.'),
]
_SWIGLU = re.compile(r'^(backbone\.blocks\.\d+\.mlp\.)w([12])\.(weight|bias)$')


def is_meta_m2f_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a segmentor state_dict is in the layout of Meta's released
    Mask2Former checkpoint (mmcv 1.x layer lists or Meta's ViT names)."""
    return any('.attentions.0.' in k
               or re.match(r'^backbone\.blocks\.\d+\.gamma1$', k)
               for k in state_dict)


def convert_meta_m2f(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Meta's ViT-Adapter + Mask2Former state_dict -> ours.

    Raises:
        ValueError: if a block has only one of the two SwiGLU projections.
    """
    converted, swiglu = {}, {}
    for key, value in state_dict.items():
        match = _SWIGLU.match(key)
        if match:
            prefix, part, kind = match.groups()
            swiglu.setdefault((prefix, kind), {})[part] = value
            continue
        for pattern, replacement in _RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    for (prefix, kind), parts in swiglu.items():
        if set(parts) != {'1', '2'}:
            raise ValueError(f'{prefix}w1.{kind} and {prefix}w2.{kind} must '
                             f'come together; found only w{set(parts).pop()}')
        # The fused projection's first half is the gated one (w1).
        converted[f'{prefix}w12.{kind}'] = torch.cat([parts['1'], parts['2']])
    return converted
