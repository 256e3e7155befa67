"""Convert EoMT's released checkpoints (tue-mps/eomt, e.g.
``ade20k_semantic_eomt_large_512``'s ``pytorch_model.bin``) to
:class:`EoMTSegmentor`.

Their files hold the state_dict of EoMT's Lightning module:

* ``network.encoder.backbone.*``: timm's ``vit_*_patch14[_reg4]_dinov2``
  (EoMT re-creates it with patch size 16 at 512 x 512, so the patch
  embedding is 16 x 16 and ``pos_embed`` a 32 x 32 grid); converted with
  the timm converter of the backbone files.
* ``network.encoder.pixel_mean`` / ``pixel_std``: ImageNet normalisation of
  0-1 images, done here by the data preprocessor; checked and dropped.
* ``network.q``, ``class_head``, ``mask_head``, ``upscale``,
  ``attn_mask_probs``: the head's ``query_embed``, ``cls_embed``,
  ``mask_embed``, ``upscale``, ``attn_mask_probs``.
* ``criterion.empty_weight``: the loss's class weights ("no object" last),
  a training setting (``loss_cls.class_weight``), not a model tensor;
  dropped.

EoMT's DINOv3 models hold transformers' DINOv3 ViT under
``network.encoder.backbone.`` instead, and are released as differences to
Meta's backbone file (eomt_delta.py).
"""
from typing import Dict, Mapping

import torch
from torch import Tensor

from .foreign import convert_timm

StateDict = Dict[str, Tensor]

_HEAD_RENAMES = {
    'network.q.': 'decode_head.query_embed.',
    'network.class_head.': 'decode_head.cls_embed.',
    'network.mask_head.': 'decode_head.mask_embed.',
    'network.upscale.': 'decode_head.upscale.',
    'network.attn_mask_probs': 'decode_head.attn_mask_probs',
}
EOMT_BACKBONE = 'network.encoder.backbone.'
# transformers' DINOv3ViTModel as EoMT's models/vit.py rearranges it: its
# ``embeddings`` renamed ``patch_embed`` and its ``layer`` ``blocks``.
_DINOV3_MARKERS = (EOMT_BACKBONE + 'patch_embed.patch_embeddings.',
                   EOMT_BACKBONE + 'patch_embed.register_tokens')
# torchvision's ImageNet statistics for 0-1 images; the data preprocessor
# applies the same to 0-255 images (mean * 255, std * 255).
PIXEL_STATS = {
    'network.encoder.pixel_mean': (0.485, 0.456, 0.406),
    'network.encoder.pixel_std': (0.229, 0.224, 0.225),
}
_DROPPED = ('criterion.empty_weight', )


def is_eomt_dinov3_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state_dict (or a mapping of its keys) is an EoMT Lightning
    module's on a DINOv3 ViT, as EoMT releases its DINOv3 models (deltas
    to Meta's backbone file)."""
    return any(key.startswith(_DINOV3_MARKERS) for key in state_dict)


def is_eomt_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state_dict (or a mapping of its keys) is an EoMT Lightning
    module's on timm's DINOv2, a whole model (EoMT's DINOv3 files are not:
    see :func:`is_eomt_dinov3_layout`)."""
    return any(key.startswith(EOMT_BACKBONE) for key in state_dict) \
        and not is_eomt_dinov3_layout(state_dict)


def convert_eomt(state_dict: Mapping[str, Tensor]) -> StateDict:
    """EoMT's state_dict -> :class:`EoMTSegmentor`'s.

    Keys of no known part are kept as they are, so that a strict check
    reports them.

    Raises:
        ValueError: if the file's pixel statistics are not ImageNet's (the
            configs' data preprocessor would then normalise differently).
    """
    backbone = {
        key[len(EOMT_BACKBONE):]: value
        for key, value in state_dict.items() if key.startswith(EOMT_BACKBONE)
    }
    converted = convert_eomt_head({
        key: value
        for key, value in state_dict.items()
        if not key.startswith(EOMT_BACKBONE)
    })
    converted.update({
        f'backbone.{key}': value
        for key, value in convert_timm(backbone).items()
    })
    return converted


def convert_eomt_head(state_dict: Mapping[str, Tensor]) -> StateDict:
    """The part of EoMT's state_dict outside its ViT -> the head's names,
    the pixel statistics checked and dropped with the loss's class weights.

    Raises:
        ValueError: as :func:`convert_eomt`.
    """
    converted = {}
    for key, value in state_dict.items():
        if key in PIXEL_STATS:
            expected = torch.tensor(PIXEL_STATS[key]).reshape(1, 3, 1, 1)
            if value.shape != expected.shape or not torch.allclose(
                    value.float(), expected, atol=1e-6):
                raise ValueError(
                    f'{key} is {value.flatten().tolist()}; this converter '
                    f'expects ImageNet\'s {list(PIXEL_STATS[key])}, which '
                    'model.data_preprocessor applies (x 255)')
        elif key not in _DROPPED:
            for old, new in _HEAD_RENAMES.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            converted[key] = value
    return converted
