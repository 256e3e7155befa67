"""Batch-norm + 1x1 classifier head of the official DINOv2 linear and ms
recipes."""
from typing import List, Optional, Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class DinoBNHead(BaseDecodeHead):
    """Normalise the concatenated backbone levels, then classify each pixel.

    With ``in_index=[3]`` this is the official *linear* head (last block
    only); with ``in_index=[0, 1, 2, 3]`` it is the *ms* head over the last
    four blocks. The selected levels are resized to the first one and
    concatenated (``input_transform='resize_concat'``), so ``channels`` is
    their total width; the norm layer is named ``bn`` as in Meta's files.

    Args:
        in_channels (Sequence[int]): Width of each selected level.
        channels (int, optional): Must equal ``sum(in_channels)``; derived
            when omitted.
        norm_cfg (dict): Norm layer; the official recipes use ``SyncBN``.
        **kwargs: The other :class:`BaseDecodeHead` arguments
            (``num_classes``, ``in_index``, ``dropout_ratio`` ...).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: Optional[int] = None,
                 input_transform: str = 'resize_concat',
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 **kwargs):
        if input_transform != 'resize_concat':
            raise ValueError(
                "DinoBNHead needs input_transform='resize_concat', "
                f'got {input_transform!r}')
        total = sum(in_channels)
        if channels is not None and channels != total:
            raise ValueError(
                f'DinoBNHead channels={channels} must equal sum(in_channels)='
                f'{total} (in_channels={list(in_channels)})')
        super().__init__(
            in_channels=list(in_channels),
            channels=total,
            input_transform=input_transform,
            norm_cfg=norm_cfg,
            **kwargs)
        self.bn = build_norm_layer(norm_cfg, self.in_channels)[1]

    def _transform_inputs(self, inputs: List[Tensor]) -> Tensor:
        levels = [inputs[i] for i in self.in_index]
        if all(x.shape[2:] == levels[0].shape[2:] for x in levels):
            # The ViT's levels share one grid; mmseg would still run a
            # same-size bilinear resize (an exact copy) on each of them.
            return torch.cat(levels, dim=1)
        return super()._transform_inputs(inputs)

    def forward(self, inputs: List[Tensor]) -> Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
