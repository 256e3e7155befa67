"""Mask2Former head whose semantic map is made the way Meta's released
models were evaluated."""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor


@MODELS.register_module()
class DinoMask2FormerHead(Mask2FormerHead):
    """mmseg's Mask2FormerHead (mmdet 3.x's Mask2Former) with Meta's test
    semantics.

    mmseg upsamples every query's mask logits to the input (to the whole
    padded image when the metas carry a pad shape, which breaks slide
    windows) before the sigmoid and the class-weighted sum. Meta's DINOv2
    model (mmseg 0.x) combines classes and masks at the mask resolution
    (stride 4) and then resizes the semantic map to the input; the two
    differ near boundaries. ``combine_at`` picks the order: ``'mask'``
    (default) is DINOv2's, ``'window'`` resizes the mask logits to the
    window (the network input) first, as Meta's DINOv3 Mask2Former
    (``Mask2FormerHead.predict(rescale_to=window)`` then the sum in
    dinov3/eval/segmentation/inference.py) and mmseg 1.x do. Training is
    mmseg's unchanged.

    Args:
        num_classes (int): Number of classes.
        loss_cls (dict): The classification loss. Its ``class_weight`` has
            one entry per class and a last one for "no object"; when left
            out it is ``[1.0] * num_classes + [no_object_weight]``.
        no_object_weight (float): The "no object" weight of the default
            ``class_weight`` (Mask2Former's 0.1: the many queries matched to
            no segment would otherwise swamp the classes).
        combine_at (str): ``'mask'`` or ``'window'``: the resolution at
            which the class scores weight the mask probabilities (see
            above).
        **kwargs: The other arguments of mmseg's ``Mask2FormerHead``.
    """

    def __init__(self,
                 num_classes: int,
                 loss_cls: dict,
                 no_object_weight: float = 0.1,
                 combine_at: str = 'mask',
                 **kwargs):
        if combine_at not in ('mask', 'window'):
            raise ValueError(f"combine_at={combine_at!r}: expected 'mask' "
                             "(Meta's DINOv2 M2F: combine at stride 4, then "
                             "resize) or 'window' (Meta's DINOv3 M2F and "
                             'mmseg: resize the mask logits, then combine)')
        # mmdet reads loss_cls.class_weight as an attribute.
        loss_cls = ConfigDict(loss_cls)
        weights = loss_cls.get('class_weight')
        if weights is None:
            loss_cls.class_weight = [1.0] * num_classes + [no_object_weight]
        elif len(weights) != num_classes + 1:
            raise ValueError(
                f'loss_cls.class_weight has {len(weights)} entries, but '
                f'num_classes={num_classes} needs {num_classes + 1} (one per '
                'class, then "no object"); leave it out for '
                f'[1.0] * {num_classes} + [{no_object_weight}]')
        super().__init__(num_classes=num_classes, loss_cls=loss_cls, **kwargs)
        self.combine_at = combine_at

    def predict_logits(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                       test_cfg: dict) -> Tensor:
        """Class-weighted mask probabilities: at the mask resolution (stride
        4, before the resize to the input) with ``combine_at='mask'``, at
        the input's with ``'window'``."""
        samples = [SegDataSample(metainfo=meta) for meta in batch_img_metas]
        all_cls_scores, all_mask_preds = self(x, samples)
        cls_score = F.softmax(all_cls_scores[-1], dim=-1)[..., :-1]
        mask_logits = all_mask_preds[-1]
        if self.combine_at == 'window':
            mask_logits = F.interpolate(
                mask_logits,
                size=self._input_size(batch_img_metas, test_cfg),
                mode='bilinear',
                align_corners=self.align_corners)
        return torch.einsum('bqc,bqhw->bchw', cls_score, mask_logits.sigmoid())

    @staticmethod
    def _input_size(batch_img_metas: List[dict], test_cfg: dict) -> tuple:
        # The map must cover the network input: a slide window sets
        # img_shape to its crop, while a padded whole image keeps the padded
        # size in pad_shape (the segmentor crops the padding off later).
        meta = batch_img_metas[0]
        size = meta['img_shape']
        if test_cfg.get('mode') != 'slide' and 'pad_shape' in meta:
            size = meta['pad_shape']
        return tuple(size[:2])

    def predict(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                test_cfg: dict) -> Tensor:
        seg_map = self.predict_logits(x, batch_img_metas, test_cfg)
        size = self._input_size(batch_img_metas, test_cfg)
        if tuple(seg_map.shape[-2:]) == size:
            return seg_map
        return F.interpolate(
            seg_map,
            size=size,
            mode='bilinear',
            align_corners=self.align_corners)
