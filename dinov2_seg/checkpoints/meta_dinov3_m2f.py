"""Convert Meta's DINOv3 Mask2Former head file
(``dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth``, hub ``dinov3_vit7b16_ms``)
to this project's segmentor names.

The file is a plain state_dict of Meta's ``FeatureDecoder`` without the
ViT (Meta loads it non-strictly, asserting that only backbone keys are
missing): ``segmentation_model.0.*`` is ``DINOv3_Adapter`` less its
``backbone.*``, ``segmentation_model.1.*`` the detectron2-style
Mask2Former (``pixel_decoder.*``, ``predictor.*``). A checkpoint of Meta's
training code holds the same names under ``model``.

* The adapter's names are those of :class:`DinoV3Adapter` (the ViT sits
  under ``vit.`` there and comes from the backbone file).
* The pixel decoder and decoder compute what mmdet 3.x's
  ``MSDeformAttnPixelDecoder`` and mmseg's ``Mask2FormerHead`` compute
  (checked in tests/test_dinov3_m2f_official.py); only the names differ:
  detectron2 names each layer's parts (``norm1``, ``linear1``; one module
  list per sub-layer kind in the decoder), mmcv keeps them in lists
  (``norms.0``, ``ffn.layers.0.0``; cross-attention, self-attention, FFN
  in one layer).

Every key must match a rule: a tensor of no known part is an error naming
it, so that a file of another layout does not half-load; and the file's
adapter width must be the configured backbone's
(:func:`check_dinov3_m2f_backbone`).
"""
import re
from typing import Dict, Mapping, Optional

from torch import Tensor, nn

from dinov2_seg.arch_settings import DINOV3_ARCH_SETTINGS

StateDict = Dict[str, Tensor]

ADAPTER = 'segmentation_model.0.'
HEAD = 'segmentation_model.1.'
_PIXEL = 'decode_head.pixel_decoder.'
_DECODER = 'decode_head.transformer_decoder.layers.'
# (Meta's name after segmentation_model.1., ours); \d+ groups carry over.
_HEAD_RULES = [
    (r'pixel_decoder\.input_convs\.(\d+)\.0\.(weight|bias)',
     _PIXEL + r'input_convs.\1.conv.\2'),
    (r'pixel_decoder\.input_convs\.(\d+)\.1\.(weight|bias)',
     _PIXEL + r'input_convs.\1.gn.\2'),
    (r'pixel_decoder\.encoder\.level_encoding',
     _PIXEL + 'level_encoding.weight'),
    (r'pixel_decoder\.encoder\.encoder\.layers\.(\d+)\.self_attn\.'
     r'((?:sampling_offsets|attention_weights|value_proj|output_proj)\.'
     r'(?:weight|bias))', _PIXEL + r'encoder.layers.\1.self_attn.\2'),
    (r'pixel_decoder\.encoder\.encoder\.layers\.(\d+)\.norm1\.(weight|bias)',
     _PIXEL + r'encoder.layers.\1.norms.0.\2'),
    (r'pixel_decoder\.encoder\.encoder\.layers\.(\d+)\.norm2\.(weight|bias)',
     _PIXEL + r'encoder.layers.\1.norms.1.\2'),
    (r'pixel_decoder\.encoder\.encoder\.layers\.(\d+)\.linear1\.'
     r'(weight|bias)', _PIXEL + r'encoder.layers.\1.ffn.layers.0.0.\2'),
    (r'pixel_decoder\.encoder\.encoder\.layers\.(\d+)\.linear2\.'
     r'(weight|bias)', _PIXEL + r'encoder.layers.\1.ffn.layers.1.\2'),
    (r'pixel_decoder\.(lateral_convs|output_convs)\.(\d+)\.weight',
     _PIXEL + r'\1.\2.conv.weight'),
    (r'pixel_decoder\.(lateral_convs|output_convs)\.(\d+)\.norm\.'
     r'(weight|bias)', _PIXEL + r'\1.\2.gn.\3'),
    (r'pixel_decoder\.mask_feature\.(weight|bias)',
     _PIXEL + r'mask_feature.\1'),
    (r'predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn'
     r'\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)',
     _DECODER + r'\1.cross_attn.attn.\2'),
    (r'predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.'
     r'(weight|bias)', _DECODER + r'\1.norms.0.\2'),
    (r'predictor\.transformer_self_attention_layers\.(\d+)\.self_attn'
     r'\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)',
     _DECODER + r'\1.self_attn.attn.\2'),
    (r'predictor\.transformer_self_attention_layers\.(\d+)\.norm\.'
     r'(weight|bias)', _DECODER + r'\1.norms.1.\2'),
    (r'predictor\.transformer_ffn_layers\.(\d+)\.linear1\.(weight|bias)',
     _DECODER + r'\1.ffn.layers.0.0.\2'),
    (r'predictor\.transformer_ffn_layers\.(\d+)\.linear2\.(weight|bias)',
     _DECODER + r'\1.ffn.layers.1.\2'),
    (r'predictor\.transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)',
     _DECODER + r'\1.norms.2.\2'),
    (r'predictor\.post_norm\.(weight|bias)',
     r'decode_head.transformer_decoder.post_norm.\1'),
    (r'predictor\.(query_feat|query_embed|level_embed)\.weight',
     r'decode_head.\1.weight'),
    (r'predictor\.class_embed\.(weight|bias)', r'decode_head.cls_embed.\1'),
    # Meta's MLP holds only the linear layers; mmdet's Sequential has a
    # ReLU between them.
    (r'predictor\.mask_embed\.layers\.0\.(weight|bias)',
     r'decode_head.mask_embed.0.\1'),
    (r'predictor\.mask_embed\.layers\.1\.(weight|bias)',
     r'decode_head.mask_embed.2.\1'),
    (r'predictor\.mask_embed\.layers\.2\.(weight|bias)',
     r'decode_head.mask_embed.4.\1'),
]
_HEAD_PATTERNS = [(re.compile(f'^{old}$'), new) for old, new in _HEAD_RULES]
_ADAPTER_PARTS = ('level_embed', 'spm.', 'interactions.', 'up.', 'norm1.',
                  'norm2.', 'norm3.', 'norm4.')


def is_meta_dinov3_m2f_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state_dict holds Meta's DINOv3 Mask2Former (its adapter
    or its pixel decoder and decoder under ``segmentation_model.*``)."""
    return any(
        k.startswith((HEAD + 'pixel_decoder.', HEAD + 'predictor.',
                      ADAPTER + 'spm.')) for k in state_dict)


def adapter_width(state_dict: Mapping[str, Tensor]) -> Optional[int]:
    """The ViT width the file's adapter was built for (its level
    embedding is (3, width)), if the file has it."""
    level_embed = state_dict.get(ADAPTER + 'level_embed')
    return None if level_embed is None else int(level_embed.shape[-1])


def _convert_key(key: str, source: str) -> str:
    if key.startswith(ADAPTER):
        part = key[len(ADAPTER):]
        if part.startswith('backbone.'):
            # A file that kept the ViT: Meta's backbone names are ours.
            return 'backbone.vit.' + part[len('backbone.'):]
        if part.startswith(_ADAPTER_PARTS):
            return 'backbone.' + part
    elif key.startswith(HEAD):
        part = key[len(HEAD):]
        for pattern, replacement in _HEAD_PATTERNS:
            if pattern.match(part):
                return pattern.sub(replacement, part)
    raise ValueError(
        f'{source}: tensor {key!r} is not part of Meta\'s DINOv3 '
        'Mask2Former layout (segmentation_model.0.{level_embed, spm, '
        'interactions, up, norm1-4}, segmentation_model.1.{pixel_decoder, '
        'predictor}); the file is of another model or was changed')


def convert_meta_dinov3_m2f(state_dict: Mapping[str, Tensor],
                            source: str = 'the checkpoint') -> StateDict:
    """Meta's DINOv3 adapter + Mask2Former names -> the segmentor's.

    Raises:
        ValueError: on a key of no known part, naming ``source`` and it.
    """
    return {_convert_key(k, source): v for k, v in state_dict.items()}


def backbone_summary(backbone: nn.Module) -> str:
    """``Type(arch=..., width N)`` of a backbone, for error messages."""
    return (f'{type(backbone).__name__}(arch='
            f'{getattr(backbone, "arch", "?")!r}, width '
            f'{getattr(backbone, "embed_dim", "?")})')


def _dinov3_archs(width: Optional[int]) -> str:
    archs = [
        name for name, settings in DINOV3_ARCH_SETTINGS.items()
        if settings['embed_dim'] == width
    ]
    return f' ({" / ".join(archs)})' if archs else ''


def check_dinov3_m2f_backbone(backbone: nn.Module, state_dict: Mapping,
                              filename: str) -> None:
    """Refuse Meta's DINOv3 Mask2Former head file on a backbone it was not
    made for, naming both (the file's adapter width and the config's)."""
    width = adapter_width(state_dict)
    described = (f"{filename} is Meta's DINOv3 Mask2Former head file, "
                 f'made for DINOv3\'s adapter on a ViT of width {width}'
                 f'{_dinov3_archs(width)}')
    # Duck-typed (DinoV3Adapter lives in models, above this package).
    if getattr(backbone, 'vit_prefix', None) is None:
        raise ValueError(
            f'{described}, but model.backbone is '
            f'{backbone_summary(backbone)}. Use '
            'configs/dinov3/ade20k_vit7b16_m2f_official.py (DinoV3Adapter '
            'on the DINOv3 ViT-7B/16 backbone file).')
    if width is not None and width != backbone.embed_dim:
        raise ValueError(
            f'{described}, but the config\'s backbone is '
            f'{backbone_summary(backbone)}. Set model.backbone.arch (and '
            'the matching backbone file and decode_head.in_channels) to '
            'the file\'s ViT, e.g. '
            'configs/dinov3/ade20k_vit7b16_m2f_official.py for the '
            'released 7B file.')
