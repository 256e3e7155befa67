"""Strict loading of segmentor checkpoints: our training checkpoints and
Meta's released head files.

Meta's ``dinov2_<arch>_<dataset>_<linear|ms>_head.pth`` files are mmcv 1.x
checkpoints whose ``state_dict`` holds only ``decode_head.bn.*`` and
``decode_head.conv_seg.*`` under the same names as our DinoBNHead; the backbone
comes from its own file. mmengine would load them non-strictly, silently
leaving a 150-class head random under a 21-class config, so the check here
is strict and explains the usual mix-ups. Linear heads trained with Meta's
DINOv3 segmentation code (``model_final.pth``, the head under
``model['segmentation_model.1.*']``) are renamed to the same names on load
(dinov3_head.py).

Meta's ViT-g Mask2Former file holds the whole model in mmseg 0.x names; it
is converted on load (meta_m2f.py), as are EoMT's released models
(eomt.py). Meta's DINOv3 Mask2Former head file holds the adapter and the
Mask2Former without the ViT, in detectron2-style names
(meta_dinov3_m2f.py); the ViT comes from the backbone file, and a file
made for another backbone (DINOv2, or a DINOv3 ViT of another width) is
refused naming both.
"""
from typing import Mapping, Optional

from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from .dinov3_head import convert_dinov3_head, is_dinov3_head_checkpoint
from .eomt import convert_eomt, is_eomt_dinov3_layout, is_eomt_layout
from .eomt_delta import load_eomt_deltas
from .frozen_backbone import (BACKBONE_SHA256_KEY, check_backbone_file,
                              frozen_backbone_keys)
from .meta_dinov3_m2f import (backbone_summary, check_dinov3_m2f_backbone,
                              convert_meta_dinov3_m2f,
                              is_meta_dinov3_m2f_layout)
from .meta_m2f import convert_meta_m2f, is_meta_m2f_layout
from .strict_check import check_state_dict


def _hints(expected: Mapping[str, Tensor], found: Mapping[str,
                                                          Tensor]) -> list:
    hints = []
    key = 'decode_head.conv_seg.weight'
    if key in expected and key in found:
        want, got = expected[key].shape, found[key].shape
        if want[0] != got[0]:
            hints.append(f'The checkpoint predicts {got[0]} classes, the '
                         f'config {want[0]} (model.decode_head.num_classes).')
        if want[1] != got[1]:
            hints.append(
                f'The checkpoint head reads {got[1]} channels, the config '
                f'{want[1]}: a head for another backbone size or recipe '
                '(linear reads the embedding width, ms four times it).')
    key = 'decode_head.cls_embed.weight'  # Mask2Former: classes + no-object
    if key in expected and key in found:
        want, got = expected[key].shape[0] - 1, found[key].shape[0] - 1
        if want != got:
            hints.append(f'The checkpoint predicts {got} classes, the '
                         f'config {want} (model.decode_head.num_classes; '
                         'its cls_embed has one more row, "no object").')
    return hints


def load_segmentor_checkpoint(model: nn.Module,
                              filename: str,
                              backbone_loaded: bool = False) -> dict:
    """Load ``filename`` into an EncoderDecoder, every tensor checked.

    A checkpoint without backbone weights (a released head file, or our
    checkpoint of a frozen-backbone run, whose backbone file must have the
    recorded SHA-256) takes the backbone from ``model.backbone.init_cfg``,
    loaded strictly as well, unless ``backbone_loaded`` says that the
    caller has put the backbone's weights in already (a model in memory).

    Returns:
        dict: the checkpoint's ``meta`` (empty if it has none).

    Raises:
        ValueError: on missing, unexpected or mis-shaped tensors, naming the
            file, the keys, both shapes and, for heads, the class count or
            channel width that differs.
    """
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    if is_dinov3_head_checkpoint(checkpoint):
        state_dict = convert_dinov3_head(checkpoint['model'])
    else:
        state_dict = checkpoint.get('state_dict', checkpoint)
    state_dict = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items() if isinstance(v, Tensor)
    }
    # The prefix of the backbone tensors that a backbone file provides
    # (a DINOv3 adapter's ViT; else the whole backbone).
    vit_prefix = getattr(getattr(model, 'backbone', None), 'vit_prefix', None)
    file_prefix = 'backbone.' + (vit_prefix or '')
    if is_meta_dinov3_m2f_layout(state_dict):
        check_dinov3_m2f_backbone(model.backbone, state_dict, filename)
        state_dict = convert_meta_dinov3_m2f(state_dict, filename)
    elif is_meta_m2f_layout(state_dict):
        if vit_prefix is not None:
            raise ValueError(
                f"{filename} is Meta's DINOv2 ViT-g Mask2Former "
                '(dinov2_vitg14_ade20k_m2f.pth layout: ViT-Adapter with '
                'injectors), but model.backbone is '
                f'{backbone_summary(model.backbone)}, DINOv3\'s adapter. '
                'Use configs/ade20k_vitg14_m2f_official.py.')
        state_dict = convert_meta_m2f(state_dict)
    elif is_eomt_layout(state_dict):
        state_dict = convert_eomt(state_dict)
    elif is_eomt_dinov3_layout(state_dict):
        state_dict = load_eomt_deltas(model, state_dict, filename,
                                      backbone_loaded)
    expected = model.state_dict()
    meta = checkpoint.get('meta') or {}
    if BACKBONE_SHA256_KEY in meta:
        # Our checkpoint of a frozen-backbone run: the backbone comes from
        # the file it was trained on, checked by hash.
        if not backbone_loaded:
            check_backbone_file(meta, model, filename)
        from_file = set(frozen_backbone_keys(model))
    elif not any(k.startswith(file_prefix) for k in state_dict):
        init_cfg = getattr(model.backbone, 'init_cfg', None)
        if not backbone_loaded and (not init_cfg
                                    or init_cfg.get('type') != 'Pretrained'):
            raise ValueError(
                f'{filename} holds no backbone weights (a head-only file '
                'such as Meta\'s *_head.pth) and model.backbone.init_cfg '
                'names no backbone file; set it, e.g. --cfg-options '
                'model.backbone.init_cfg.checkpoint='
                'checkpoints/dinov2_vits14_pretrain.pth')
        from_file = {k for k in expected if k.startswith(file_prefix)}
    else:
        from_file = set()
    expected = {k: v for k, v in expected.items() if k not in from_file}
    check_state_dict(expected, state_dict, filename,
                     'the model of this config', _hints(expected, state_dict))
    if from_file and not backbone_loaded:
        model.backbone.init_weights()
    model.load_state_dict(state_dict, strict=False)
    return meta
