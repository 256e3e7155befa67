"""DINOv3 ConvNeXt (Meta's distilled T/S/B/L) as a hierarchical
mmsegmentation backbone.

Four stages at strides 4, 8, 16 and 32. Parameter names are those of Meta's
``dinov3/models/convnext.py``, so its ``dinov3_convnext_*_pretrain_*.pth``
files load without renaming (Hugging Face's layout is converted on load,
dinov2_seg/checkpoints/dinov3_convnext.py).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.checkpoints.dinov3_convnext import load_convnext_checkpoint
from .pretrained import StrictPretrainedMixin

# Meta's sizes (``convnext_sizes`` in dinov3/models/convnext.py).
CONVNEXT_ARCHS: Dict[str, dict] = {
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    'small': dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    'base': dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    'large': dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}
_EPS = 1e-6  # every norm of Meta's ConvNeXt


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (the stem's and the
    downsampling layers' norm), with ``weight``/``bias`` as in Meta's
    files."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm over channels, pointwise MLP (4x,
    GELU), layer scale, residual; stochastic depth when training."""

    def __init__(self,
                 dim: int,
                 drop_path: float = 0.0,
                 layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim, ), layer_scale_init))
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last for the MLP
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y)))) * self.gamma
        y = y.permute(0, 3, 1, 2)
        if self.training and self.drop_path > 0:
            keep = 1 - self.drop_path
            mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
            y = y * mask / keep
        return x + y


@MODELS.register_module()
class DinoV3ConvNeXt(StrictPretrainedMixin, BaseModule):
    """DINOv3 ConvNeXt returning NCHW maps of the stages in ``out_indices``.

    As in Meta's segmentation features (``get_intermediate_layers`` with
    ``norm=True``), the last stage's output goes through the final
    LayerNorm and the other stages' are returned as they are (Meta's
    per-stage norms are identities for them). The input is not padded:
    the strided convolutions drop a remainder, as Meta's do.

    Args:
        arch (str | dict): ``tiny``, ``small``, ``base``, ``large`` or a
            dict with ``depths`` and ``dims`` (four stages each).
        out_indices (Sequence[int]): Stages whose outputs are returned
            (0-3, negative from the end). Defaults to all four.
        frozen (bool): Keep the backbone in eval mode without gradients,
            as Meta's linear recipe does. Set False to fine-tune.
        drop_path_rate (float): Stochastic depth at the last block
            (linearly increasing over all blocks), for fine-tuning.
        layer_scale_init (float): Initial layer-scale value.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=...)`` loads Meta's file (or a Hugging Face
            ``DINOv3ConvNextModel``'s weights) strictly.
    """
    pretrained_file_hint = ('checkpoints/dinov3_convnext_<size>_pretrain_'
                            'lvd1689m-<hash>.pth')
    pretrained_file_note = (' (gated: request them under the DINOv3 '
                            'License)')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1e-6,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in CONVNEXT_ARCHS:
                raise KeyError(f'Unknown DINOv3 ConvNeXt arch {arch!r}; '
                               f'expected one of {sorted(CONVNEXT_ARCHS)} '
                               'or a dict with depths and dims')
            self.arch, settings = arch, CONVNEXT_ARCHS[arch]
        else:
            self.arch, settings = 'custom', arch
        depths, dims = tuple(settings['depths']), tuple(settings['dims'])
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f'ConvNeXt needs four stages, got depths '
                             f'{depths} and dims {dims}')
        if any(not -4 <= i < 4 for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range '
                             'for 4 stages')
        self.out_indices = tuple(sorted(i % 4 for i in out_indices))
        self.dims = dims
        self.embed_dim = dims[-1]
        self.frozen = frozen

        stem = nn.Sequential(
            nn.Conv2d(3, dims[0], 4, stride=4),
            ChannelsFirstLayerNorm(dims[0], eps=_EPS))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i], eps=_EPS),
                    nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        total, done = sum(depths), 0
        self.stages = nn.ModuleList()
        for depth, dim in zip(depths, dims):
            self.stages.append(
                nn.Sequential(*[
                    ConvNeXtBlock(
                        dim,
                        drop_path_rate * (done + j) /
                        max(total - 1, 1), layer_scale_init)
                    for j in range(depth)
                ]))
            done += depth
        self.norm = nn.LayerNorm(dims[-1], eps=_EPS)
        self._init_random_weights()
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def _init_random_weights(self) -> None:
        # Meta's initialisation, so that a random backbone (the demos,
        # the tests) behaves like its untrained one.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def load_pretrained_file(self, path: str) -> None:
        load_convnext_checkpoint(self, path)

    def train(self, mode: bool = True) -> 'DinoV3ConvNeXt':
        return super().train(mode and not self.frozen)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outputs = []
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            for i in range(max(self.out_indices) + 1):
                x = self.stages[i](self.downsample_layers[i](x))
                if i in self.out_indices:
                    outputs.append(x if i <
                                   3 else self.norm(x.permute(0, 2, 3, 1)).
                                   permute(0, 3, 1, 2).contiguous())
        return tuple(outputs)
