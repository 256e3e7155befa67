"""Parts of the ViT-Adapter (Chen et al., ICLR 2023) around a plain ViT.

Attribute names and module order (``spm.stem.1``, ``injector.attn.value_proj``
...) follow the layout of Meta's ``dinov2_vitg14_ade20k_m2f.pth`` so that
its tensors load by name; only the ViT blocks need renaming
(``checkpoints/meta_m2f.py``).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmcv.ops import MultiScaleDeformableAttention
from torch import Tensor, nn

# Three levels of spatial-prior features at strides 8, 16 and 32.
PRIOR_STRIDES = (8, 16, 32)


class DeformableAttention(MultiScaleDeformableAttention):
    """mmcv's multi-scale deformable attention as the adapter's injector and
    extractor use it: batch-first, no dropout, values projected to
    ``value_ratio * dim``. Its parameters carry the names of Meta's files.

    mmcv's ``forward`` adds ``identity`` (by default the query) to the
    output; the extractor passes its residual there, the injector a zero
    because it gates the attention before adding it.

    Args:
        dim (int): Query and feature width.
        num_heads (int): Attention heads.
        num_levels (int): Feature levels sampled.
        num_points (int): Sampling points per head and level.
        value_ratio (float): Width of the projected values relative to dim.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 num_levels: int,
                 num_points: int = 4,
                 value_ratio: float = 1.0):
        value_dim = int(dim * value_ratio)
        # mmcv checks dim, but the heads split the projected values.
        if value_dim % num_heads:
            raise ValueError(f'value width {value_dim} (dim {dim} x ratio '
                             f'{value_ratio}) is not divisible by '
                             f'{num_heads} heads')
        super().__init__(
            embed_dims=dim,
            num_heads=num_heads,
            num_levels=num_levels,
            num_points=num_points,
            dropout=0.0,
            batch_first=True,
            value_proj_ratio=value_ratio)


def reference_points(shapes: Sequence[Tuple[int, int]],
                     device: torch.device) -> Tensor:
    """Cell centres of each (h, w) grid, normalised to [0, 1] as (x, y),
    concatenated: shape (1, sum(h*w), 1, 2)."""
    points = []
    for height, width in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(height, device=device) + 0.5) / height,
            (torch.arange(width, device=device) + 0.5) / width,
            indexing='ij')
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(points)[None, :, None]


def level_index(shapes: Sequence[Tuple[int, int]],
                device: torch.device) -> Tuple[Tensor, Tensor]:
    """Spatial shapes (L, 2) and start offsets (L,) of flattened levels."""
    spatial = torch.as_tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial.prod(1)
    return spatial, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def unflatten_levels(x: Tensor, shapes: Sequence[Tuple[int,
                                                       int]]) -> List[Tensor]:
    """Split a flattened (B, sum(h*w), C) multi-level sequence into NCHW
    maps of the given (h, w) shapes."""
    parts = x.split([h * w for h, w in shapes], dim=1)
    return [
        part.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        for part, (h, w) in zip(parts, shapes)
    ]


class MultiLevelDWConv(nn.Module):
    """3x3 depth-wise convolution applied to each of the three prior levels
    of a flattened (B, sum(h*w), C) sequence, with shared weights."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, shapes: Sequence[Tuple[int, int]]) -> Tensor:
        maps = [self.dwconv(grid) for grid in unflatten_levels(x, shapes)]
        return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


class ConvFFN(nn.Module):
    """Feed-forward network with a depth-wise convolution between its two
    linear layers (the extractor's local mixing)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = MultiLevelDWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, shapes: Sequence[Tuple[int, int]]) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), shapes)))


class Injector(nn.Module):
    """Spatial prior -> ViT tokens: deformable cross-attention whose output
    enters the token stream through a learnable per-channel gate."""

    def __init__(self, dim: int, num_heads: int, num_points: int,
                 value_ratio: float, gate_init: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DeformableAttention(dim, num_heads, len(PRIOR_STRIDES),
                                        num_points, value_ratio)
        self.gamma = nn.Parameter(torch.full((dim, ), float(gate_init)))

    def forward(self, tokens: Tensor, prior: Tensor, points: Tensor,
                spatial: Tensor, starts: Tensor) -> Tensor:
        query = self.query_norm(tokens)
        attended = self.attn(
            query,
            value=self.feat_norm(prior),
            identity=query.new_zeros(()),
            reference_points=points,
            spatial_shapes=spatial,
            level_start_index=starts)
        return tokens + self.gamma * attended


class Extractor(nn.Module):
    """ViT tokens -> spatial prior: deformable cross-attention followed by a
    convolutional FFN, both residual."""

    def __init__(self, dim: int, num_heads: int, num_points: int,
                 value_ratio: float, ffn_ratio: float, drop_path: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DeformableAttention(dim, num_heads, 1, num_points,
                                        value_ratio)
        self.ffn = ConvFFN(dim, int(dim * ffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = DropPath(
            drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, prior: Tensor, tokens: Tensor, points: Tensor,
                spatial: Tensor, starts: Tensor,
                prior_shapes: Sequence[Tuple[int, int]]) -> Tensor:
        prior = self.attn(
            self.query_norm(prior),
            value=self.feat_norm(tokens),
            identity=prior,
            reference_points=points,
            spatial_shapes=spatial,
            level_start_index=starts)
        return prior + self.drop_path(
            self.ffn(self.ffn_norm(prior), prior_shapes))


class InteractionBlock(nn.Module):
    """One adapter stage: inject the prior into the tokens, run a slice of
    ViT blocks, extract the tokens back into the prior (the last stage runs
    two extra extractors)."""

    def __init__(self, dim: int, num_heads: int, num_points: int,
                 value_ratio: float, ffn_ratio: float, gate_init: float,
                 drop_path: float, extra_extractors: bool):
        super().__init__()
        self.injector = Injector(dim, num_heads, num_points, value_ratio,
                                 gate_init)
        extractor_args = (dim, num_heads, num_points, value_ratio, ffn_ratio,
                          drop_path)
        self.extractor = Extractor(*extractor_args)
        self.extra_extractors = nn.Sequential(
            Extractor(*extractor_args), Extractor(
                *extractor_args)) if extra_extractors else None

    def forward(self, tokens: Tensor, prefix: Tensor, prior: Tensor,
                blocks: Sequence[nn.Module], inject: tuple,
                extract: tuple) -> Tuple[Tensor, Tensor, Tensor]:
        """``prefix`` holds the class (and register) tokens, which skip the
        injection and extraction but go through the ViT blocks."""
        tokens = self.injector(tokens, prior, *inject)
        num_prefix = prefix.shape[1]
        x = torch.cat([prefix, tokens], dim=1)
        for block in blocks:
            x = block(x)
        prefix, tokens = x[:, :num_prefix], x[:, num_prefix:]
        extractors = [self.extractor]
        if self.extra_extractors is not None:
            extractors += list(self.extra_extractors)
        for extractor in extractors:
            prior = extractor(prior, tokens, *extract)
        return tokens, prefix, prior


def _conv_norm_relu(in_channels: int, out_channels: int, stride: int,
                    norm_cfg: dict) -> List[nn.Module]:
    return [
        nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1,
            bias=False),
        build_norm_layer(norm_cfg, out_channels)[1],
        nn.ReLU(inplace=True)
    ]


class SpatialPriorModule(nn.Module):
    """Small convolutional stem giving the local spatial prior: a stride-4
    map ``c1`` (B, dim, H/4, W/4) and three flattened levels at strides 8,
    16 and 32, all projected to the ViT width."""

    def __init__(self, inplanes: int, dim: int, norm_cfg: dict):
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_norm_relu(3, inplanes, 2, norm_cfg),
            *_conv_norm_relu(inplanes, inplanes, 1, norm_cfg),
            *_conv_norm_relu(inplanes, inplanes, 1, norm_cfg),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_norm_relu(inplanes, 2 *
                                                    inplanes, 2, norm_cfg))
        self.conv3 = nn.Sequential(*_conv_norm_relu(2 * inplanes, 4 *
                                                    inplanes, 2, norm_cfg))
        self.conv4 = nn.Sequential(*_conv_norm_relu(4 * inplanes, 4 *
                                                    inplanes, 2, norm_cfg))
        self.fc1 = nn.Conv2d(inplanes, dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        levels = [
            fc(c).flatten(2).transpose(1, 2)
            for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))
        ]
        return self.fc1(c1), levels


class ExtractionBlock(nn.Module):
    """One stage of DINOv3's adapter (Meta's ``InteractionBlockWithCls``):
    only the extractor, tokens -> spatial prior; the last stage runs two
    extra extractors. Nothing flows back into the ViT, which runs unchanged
    (no injector, unlike DINOv2's :class:`InteractionBlock`)."""

    def __init__(self, dim: int, num_heads: int, num_points: int,
                 value_ratio: float, ffn_ratio: float, drop_path: float,
                 extra_extractors: bool):
        super().__init__()
        extractor_args = (dim, num_heads, num_points, value_ratio, ffn_ratio,
                          drop_path)
        self.extractor = Extractor(*extractor_args)
        self.extra_extractors = nn.Sequential(
            Extractor(*extractor_args), Extractor(
                *extractor_args)) if extra_extractors else None

    def forward(self, prior: Tensor, tokens: Tensor, extract: tuple) -> Tensor:
        extractors = [self.extractor]
        if self.extra_extractors is not None:
            extractors += list(self.extra_extractors)
        for extractor in extractors:
            prior = extractor(prior, tokens, *extract)
        return prior


class AdapterPyramidMixin:
    """What DINOv2's and DINOv3's adapters share around their interaction
    stages: ViT-Adapter's initialisation of the adapter's own modules, and
    the prior's inputs and the output pyramid. A subclass builds its
    ``interactions`` between :meth:`_build_prior` and
    :meth:`_build_output` (the order of ViT-Adapter's modules, so that a
    seed gives the same initial weights), and sets ``patch_size`` and
    ``add_vit_feature``."""

    def _build_prior(self, dim: int, conv_inplane: int,
                     norm_cfg: dict) -> None:
        self.level_embed = nn.Parameter(torch.zeros(len(PRIOR_STRIDES), dim))
        self.spm = SpatialPriorModule(conv_inplane, dim, norm_cfg)

    def _build_output(self, dim: int, norm_cfg: dict) -> None:
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        for i in range(1, 5):
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, dim)[1])
        self._init_adapter_weights()

    def _init_adapter_weights(self) -> None:
        # ViT-Adapter's initialisation, for training from scratch.
        for part in (self.spm, self.interactions, self.up):
            for module in part.modules():
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    # He init on the fan-out, as ViT-Adapter does.
                    fan_out = (
                        module.kernel_size[0] * module.kernel_size[1] *
                        module.out_channels // module.groups)
                    nn.init.normal_(module.weight, std=(2.0 / fan_out)**0.5)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        for module in self.interactions.modules():
            if isinstance(module, DeformableAttention):
                module.init_weights()
        nn.init.normal_(self.level_embed)

    def _prior_inputs(self, x: Tensor) -> tuple:
        """After checking the input's size: the stem map at stride 4, the
        flattened prior (levels at strides 8/16/32 plus their embeddings),
        the prior's level shapes, the ViT's token grid and the extractors'
        sampling inputs."""
        height, width = x.shape[2:]
        coarsest = PRIOR_STRIDES[-1]
        if height % coarsest or width % coarsest:
            # The prior levels are split assuming exact strides.
            raise ValueError(
                f'{type(self).__name__} needs input sides that are '
                f'multiples of {coarsest}, got {height}x{width}; add '
                f"dict(type='ResizeToMultiple', size_divisor={coarsest}) to "
                'the test pipeline or use a crop size that is a multiple of '
                f'{coarsest}')
        prior_shapes = [(height // s, width // s) for s in PRIOR_STRIDES]
        token_shape = (height // self.patch_size, width // self.patch_size)
        spatial, starts = level_index([token_shape], x.device)
        extract = (reference_points(prior_shapes,
                                    x.device), spatial, starts, prior_shapes)
        c1, levels = self.spm(x)
        prior = torch.cat(
            [level + embed for level, embed in zip(levels, self.level_embed)],
            dim=1)
        return c1, prior, prior_shapes, token_shape, extract

    def _output_pyramid(self, c1: Tensor, prior: Tensor,
                        prior_shapes: Sequence[Tuple[int, int]],
                        vit_maps: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Strides 4 (the stem map plus the upsampled stride-8 prior), 8,
        16 and 32 (the prior), each plus the stage's token map resized to
        it, then batch-normalised."""
        c2, c3, c4 = unflatten_levels(prior, prior_shapes)
        pyramid = [self.up(c2) + c1, c2, c3, c4]
        if self.add_vit_feature:
            pyramid = [
                level + F.interpolate(
                    vit_map,
                    size=level.shape[2:],
                    mode='bilinear',
                    align_corners=False)
                for level, vit_map in zip(pyramid, vit_maps)
            ]
        return tuple(
            getattr(self, f'norm{i + 1}')(level)
            for i, level in enumerate(pyramid))
