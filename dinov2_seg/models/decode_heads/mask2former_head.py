"""Mask2Former head whose semantic map is resized the way Meta's released
model was evaluated."""
from typing import List, Tuple

import torch
import torch.nn.functional as F
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
    windows) before the sigmoid and the class-weighted sum. Meta's model
    (mmseg 0.x) combines classes and masks at the mask resolution (stride 4)
    and then resizes the semantic map to the input; the two differ near
    boundaries, so this head does the latter. Training is mmseg's unchanged.
    """

    def predict_logits(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                       test_cfg: dict) -> Tensor:
        """Class-weighted mask probabilities at the mask resolution (stride
        4), before the resize to the input."""
        samples = [SegDataSample(metainfo=meta) for meta in batch_img_metas]
        all_cls_scores, all_mask_preds = self(x, samples)
        cls_score = F.softmax(all_cls_scores[-1], dim=-1)[..., :-1]
        mask_pred = all_mask_preds[-1].sigmoid()
        return torch.einsum('bqc,bqhw->bchw', cls_score, mask_pred)

    def predict(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                test_cfg: dict) -> Tensor:
        seg_map = self.predict_logits(x, batch_img_metas, test_cfg)
        # The map must cover the network input: a slide window sets
        # img_shape to its crop, while a padded whole image keeps the padded
        # size in pad_shape (the segmentor crops the padding off later).
        meta = batch_img_metas[0]
        size = meta['img_shape']
        if test_cfg.get('mode') != 'slide' and 'pad_shape' in meta:
            size = meta['pad_shape']
        return F.interpolate(
            seg_map,
            size=size,
            mode='bilinear',
            align_corners=self.align_corners)
