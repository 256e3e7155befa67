"""Python API mirroring the official notebook: build the model from a config,
load the backbone and head files, segment an image array, render it.

    model = init_segmentor(
        'configs/voc2012_vits14_ms.py',
        checkpoint='checkpoints/dinov2_vits14_voc2012_ms_head.pth',
        backbone='checkpoints/dinov2_vits14_pretrain.pth',
        scales=3)
    labels = inference_segmentor(model, cv2.imread('image.jpg'))
    batch = inference_segmentor(model, ['a.jpg', 'b.jpg'], batch_size=2)
    colours = render_segmentation(labels, model.dataset_meta['palette'])
"""
import copy
import os.path as osp
import pickle
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

from dinov2_seg.checkpoints import load_segmentor_checkpoint, read_checkpoint
from dinov2_seg.checkpoints.eomt import is_eomt_layout
from dinov2_seg.checkpoints.from_module import load_backbone_from_module
from dinov2_seg.checkpoints.frozen_backbone import BACKBONE_SHA256_KEY
from dinov2_seg.checkpoints.meta_m2f import is_meta_m2f_layout
from dinov2_seg.checkpoints.safe_loading import load_weights_only
from dinov2_seg.datasets.pipelines import (ImageType, inference_inputs,
                                           select_tta_scales,
                                           test_dataset_meta,
                                           without_annotations)
from dinov2_seg.engine.console import recipe_warnings_hidden
# Part of this API since the official notebook's: colours of a label map.
from dinov2_seg.visualization.segmentation import render_segmentation

__all__ = [
    'holds_backbone_weights', 'inference_inputs', 'inference_segmentor',
    'init_segmentor', 'render_segmentation', 'segment_batch'
]


def holds_backbone_weights(checkpoint: str) -> bool:
    """Whether a segmentor checkpoint brings backbone weights of its own (a
    whole model) rather than leaving them to a backbone file (Meta's head
    files, our checkpoints of frozen-backbone runs)."""
    loaded = None
    if osp.isfile(checkpoint):
        try:  # memory-mapped: only the key names are read, not 4 GB of ViT-g
            loaded = load_weights_only(
                checkpoint, map_location='cpu', mmap=True)
        except (RuntimeError, pickle.UnpicklingError):
            # torch's pre-1.6 format cannot be mapped; mmengine's reader
            # explains what else goes wrong
            loaded = None
    if loaded is None:
        loaded = read_checkpoint(checkpoint)
    if BACKBONE_SHA256_KEY in (loaded.get('meta') or {}):
        return False
    state_dict = loaded.get('state_dict', loaded)
    keys = {
        k[len('module.'):] if k.startswith('module.') else k: None
        for k in state_dict
    }
    return (is_meta_m2f_layout(keys) or is_eomt_layout(keys)
            or any(k.startswith('backbone.') for k in keys))


def _refuse_two_backbones(checkpoint: str, backbone: Union[str,
                                                           nn.Module]) -> None:
    if isinstance(backbone, nn.Module):
        given = (f'backbone=<{type(backbone).__module__}.'
                 f'{type(backbone).__name__} module>')
        fate = "its weights would be overwritten by the checkpoint's"
    else:
        given = f'backbone={backbone!r} (--backbone)'
        fate = 'that file would be ignored'
    raise ValueError(
        f'init_segmentor got checkpoint={checkpoint!r}, which holds a whole '
        f'segmentor (backbone weights included), and {given}: {fate}. Pass '
        'the checkpoint alone to use its backbone, or give the backbone '
        "with a head-only checkpoint (one of Meta's *_head.pth files, or a "
        'checkpoint of a frozen-backbone run).')


def init_segmentor(config: Union[str, Config],
                   checkpoint: Optional[str] = None,
                   backbone: Optional[Union[str, nn.Module]] = None,
                   scales: Optional[int] = None,
                   device: str = 'cpu',
                   cfg_options: Optional[dict] = None,
                   amp: bool = False,
                   compile: bool = False) -> nn.Module:
    """Build a segmentor ready for :func:`inference_segmentor`.

    Args:
        config: Config file or object (e.g. ``configs/ade20k_vitl14_ms.py``).
        checkpoint: A training checkpoint, or one of Meta's ``*_head.pth``
            files (then the backbone comes from ``backbone`` or from the
            config's backbone ``init_cfg``).
        backbone: A DINOv2 backbone file, or a DINOv2 model in memory
            (Meta's torch.hub model, timm's or transformers'); overrides
            the config's. A model's weights are converted and checked as a
            file of its layout would be. Only with a checkpoint that holds
            no backbone weights: a whole segmentor's would replace them
            (ValueError).
        scales: ``None`` for single-scale inference (the config's
            test_pipeline); N in 1..5 for the multi-scale + flip test with
            the first N scales of an ms config (HEAD_SCALE_COUNT).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        cfg_options: Config overrides, as ``--cfg-options``.
        amp: Run the network under autocast (bfloat16 where supported,
            else float16; ``test_cfg.amp`` of BatchedEncoderDecoder).
        compile: ``torch.compile`` the backbone on the first windows
            (``test_cfg.compile`` of BatchedEncoderDecoder).

    Returns:
        nn.Module: the model in eval mode, with ``cfg``, ``dataset_meta``
        (classes, palette) and ``pipeline`` attributes.

    Raises:
        ValueError: if both ``backbone`` and a ``checkpoint`` holding the
            whole segmentor are given, naming both.
    """
    if backbone is not None and checkpoint is not None and \
            holds_backbone_weights(checkpoint):
        _refuse_two_backbones(checkpoint, backbone)
    if isinstance(config, str):
        cfg = Config.fromfile(config)
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if amp:
        cfg.model.test_cfg.amp = True
    if compile:
        cfg.model.test_cfg.compile = True
    in_memory = isinstance(backbone, nn.Module)
    if backbone is not None and not in_memory:
        cfg.model.backbone.init_cfg = dict(
            type='Pretrained', checkpoint=backbone)
    with recipe_warnings_hidden(cfg.model):
        model = MODELS.build(cfg.model)
    if in_memory:
        load_backbone_from_module(model.backbone, backbone)
    if checkpoint is not None:
        load_segmentor_checkpoint(model, checkpoint, backbone_loaded=in_memory)
    elif not in_memory:
        model.backbone.init_weights()
    if scales is None:
        pipeline = copy.deepcopy(cfg.test_pipeline)
    else:
        cfg.tta_scale_count = scales
        pipeline = select_tta_scales(cfg, cfg.filename or 'the config')
        model = MODELS.build(dict(cfg.tta_model, module=model))
    model.cfg = cfg
    model.dataset_meta = test_dataset_meta(cfg)
    model.pipeline = without_annotations(pipeline)
    return model.to(device).eval()


@torch.no_grad()
def segment_batch(model: nn.Module, items: Sequence[dict]) -> List[np.ndarray]:
    """Label maps of a batch of :func:`inference_inputs` outputs (images of
    any sizes; their slide windows share backbone calls)."""
    # As mmengine's test loop batches: with TestTimeAug this also groups
    # the views by augmentation, as the TTA model expects.
    samples: List[SegDataSample] = model.test_step(pseudo_collate(items))
    return [
        sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
        for sample in samples
    ]


def inference_segmentor(
        model: nn.Module,
        images: Union[ImageType, Sequence[ImageType]],
        batch_size: int = 1) -> Union[np.ndarray, List[np.ndarray]]:
    """Segment one image or a list of images (paths, or HxWx3 BGR arrays as
    cv2 reads them), ``batch_size`` images per forward pass.

    Returns:
        np.ndarray | list[np.ndarray]: (H, W) int64 class indices at each
        image's resolution; a list for a list.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    single = isinstance(images, (str, np.ndarray))
    items = [images] if single else list(images)
    labels = []
    for first in range(0, len(items), batch_size):
        labels += segment_batch(model, [
            inference_inputs(model.pipeline, image)
            for image in items[first:first + batch_size]
        ])
    return labels[0] if single else labels
