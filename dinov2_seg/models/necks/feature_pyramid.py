"""ViTDet-style simple feature pyramid over DINOv2's stride-14 maps."""
from typing import List, Optional, Sequence

import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

_NUM_LEVELS = 4


@MODELS.register_module()
class DinoFeaturePyramid(BaseModule):
    """Turn four single-scale ViT maps into a stride 4/8/16/32 pyramid.

    As in ViTDet's simple feature pyramid, each level is built from one
    plain ViT map: the maps are first resampled from the patch grid
    (stride ``patch_size``) onto the stride-16 grid, then level 0 is
    upsampled 4x by two 2x2 transposed convolutions (norm + GELU between),
    level 1 2x by one, level 2 is kept and level 3 is max-pooled 2x. Each
    level ends with a 1x1 and a 3x3 :class:`ConvModule` (norm, no
    activation) to ``out_channels``. Level ``i`` takes the backbone's map
    ``i``, so the backbone's ``out_indices`` choose the block behind each
    level.

    Args:
        in_channels (int): Width of the backbone maps (its ``embed_dim``).
        out_channels (int): Width of every output level. Defaults to 256.
        norm_cfg (dict): Norm of the transposed-convolution stage and of the
            output convolutions. Defaults to GroupNorm with 32 groups, which
            needs ``in_channels // 2`` and ``out_channels`` divisible by 32.
        patch_size (int): Stride of the input maps. Defaults to 14.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 norm_cfg: dict = dict(type='GN', num_groups=32),
                 patch_size: int = 14,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.patch_size = patch_size
        # Channels halve with every 2x upsampling, as in ViTDet: the stride-4
        # level of a ViT-g would otherwise carry 1536 channels at 128x128.
        half, quarter = in_channels // 2, in_channels // 4
        self.rescales = nn.ModuleList([
            nn.Sequential(
                nn.ConvTranspose2d(in_channels, half, 2, stride=2),
                build_norm_layer(norm_cfg, half)[1], nn.GELU(),
                nn.ConvTranspose2d(half, quarter, 2, stride=2)),
            nn.ConvTranspose2d(in_channels, half, 2, stride=2),
            nn.Identity(),
            # ceil_mode: an odd stride-16 size keeps its last row/column.
            nn.MaxPool2d(2, stride=2, ceil_mode=True),
        ])
        self.outputs = nn.ModuleList(
            nn.Sequential(
                ConvModule(
                    width, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None),
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=None))
            for width in (quarter, half, in_channels, in_channels))

    def _check_inputs(self, inputs: Sequence[Tensor]) -> None:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != _NUM_LEVELS:
            got = (f'{len(inputs)} maps' if isinstance(inputs, (list, tuple))
                   else type(inputs).__name__)
            raise ValueError(
                f'DinoFeaturePyramid expects a sequence of {_NUM_LEVELS} '
                f'backbone maps (set the backbone out_indices to 4 blocks), '
                f'got {got}')
        shapes = [tuple(x.shape) for x in inputs]
        if any(len(s) != 4 or s[1] != self.in_channels for s in shapes):
            raise ValueError(
                f'DinoFeaturePyramid expects NCHW maps with in_channels='
                f'{self.in_channels} channels (the backbone embed_dim), got '
                f'shapes {shapes}')

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        self._check_inputs(inputs)
        outputs = []
        for x, rescale, output in zip(inputs, self.rescales, self.outputs):
            outputs.append(output(rescale(self._to_stride16(x))))
        return outputs

    def _to_stride16(self, x: Tensor) -> Tensor:
        # The backbone center-pads the input to a multiple of the patch size,
        # so h patches span h * patch_size pixels. Flooring that extent to
        # whole 16-pixel cells keeps every cell inside the padded input and
        # gives exactly crop/16 cells for the crops we train and slide on
        # (37 -> 32 for 512, 46 -> 40 for 640), so levels 0-3 are then
        # crop/4, /8, /16, /32; rounding up would add a cell of padding.
        # The grid shrinks by less than one cell (518 -> 512 pixels for a 512
        # crop, ~1%). Inputs under 16 pixels keep one cell.
        grid = tuple(x.shape[-2:])
        size = tuple(max(side * self.patch_size // 16, 1) for side in grid)
        if size == grid:
            return x
        return F.interpolate(
            x, size=size, mode='bilinear', align_corners=False)
