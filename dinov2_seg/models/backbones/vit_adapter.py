"""ViT-Adapter (Chen et al., ICLR 2023) around the DINOv2 ViT, as in Meta's
ViT-g + Mask2Former ADE20K model."""
from typing import List, Optional, Sequence, Tuple, Union

from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.arch_settings import resolve_arch
from .adapter_modules import (AdapterPyramidMixin, InteractionBlock,
                              level_index, reference_points)
from .dinov2 import DinoViTBase

# The ViT parts of the model, loaded from a DINOv2 backbone file; everything
# else is the adapter's.
VIT_KEYS = ('cls_token', 'pos_embed', 'register_tokens', 'patch_embed.',
            'blocks.')


def is_vit_key(key: str) -> bool:
    return key.startswith(VIT_KEYS)


def even_interaction_indexes(depth: int, stages: int = 4) -> List[List[int]]:
    """Split ``depth`` blocks into ``stages`` consecutive [first, last]
    ranges, e.g. 40 -> [[0, 9], [10, 19], [20, 29], [30, 39]]."""
    if depth % stages:
        raise ValueError(f'cannot split {depth} blocks into {stages} equal '
                         'interaction stages; set interaction_indexes')
    size = depth // stages
    return [[i * size, (i + 1) * size - 1] for i in range(stages)]


@MODELS.register_module()
class DinoViTAdapter(AdapterPyramidMixin, DinoViTBase):
    """DINOv2 ViT with a ViT-Adapter, returning a 4-level pyramid at strides
    4, 8, 16 and 32 (each ``embed_dim`` channels, batch-normalised).

    A convolutional spatial prior (strides 8/16/32) and the ViT tokens
    exchange information before and after each stage of ViT blocks through
    multi-scale deformable attention (injector: prior -> tokens, gated;
    extractor: tokens -> prior). As in Meta's model the input is not padded
    (the patch embedding drops the remainder) and must have sides that are
    multiples of 32, the coarsest prior stride.

    Args:
        arch (str | dict): DINOv2 preset or settings, see
            :class:`DinoVisionTransformer`.
        img_size (int): Pretraining resolution (size of the stored
            positional embedding).
        interaction_indexes (Sequence[Sequence[int]], optional): [first,
            last] ViT block of each stage. Defaults to 4 equal stages.
        deform_num_heads (int, optional): Heads of the deformable
            attentions. Defaults to ``embed_dim // 64``.
        num_points (int): Sampling points per head and level.
        deform_ratio (float): Width of the deformable attention values
            relative to ``embed_dim``.
        cffn_ratio (float): Hidden width of the extractor's conv FFN
            relative to ``embed_dim``.
        conv_inplane (int): Width of the spatial prior stem.
        gate_init (float): Initial value of the injector gates (0: the
            adapter starts as the plain ViT).
        add_vit_feature (bool): Add the (resized) token maps of each stage
            to the pyramid.
        norm_cfg (dict): Norm of the prior stem and the output pyramid.
        frozen (bool): Freeze the ViT (patch embedding, tokens, blocks);
            the adapter always trains.
        drop_path_rate (float): Stochastic depth of the ViT blocks (linear
            up to this rate) and of the extractors' FFNs.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)``
            loads the ViT from a DINOv2 backbone file (any layout accepted by
            :class:`DinoVisionTransformer`); its final norm and mask token
            are not used by the adapter.
    """
    backbone_file_keys = VIT_KEYS

    def __init__(self,
                 arch: Union[str, dict] = 'vitg14',
                 img_size: int = 518,
                 patch_size: int = 14,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 deform_num_heads: Optional[int] = None,
                 num_points: int = 4,
                 deform_ratio: float = 1.0,
                 cffn_ratio: float = 0.25,
                 conv_inplane: int = 64,
                 gate_init: float = 0.0,
                 add_vit_feature: bool = True,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 frozen: bool = True,
                 drop_path_rate: float = 0.0,
                 init_cfg: Optional[dict] = None):
        depth = resolve_arch(arch)['depth']
        if interaction_indexes is None:
            interaction_indexes = even_interaction_indexes(depth)
        self._check_indexes(interaction_indexes, depth)
        # The adapter works on the raw block outputs (no final norm) and was
        # trained with the plain size-based bicubic resize of the positional
        # embedding, whatever the arch's own.
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            frozen=frozen,
            drop_path_rate=drop_path_rate,
            interpolate_offset=0.0,
            interpolate_antialias=False,
            init_cfg=init_cfg)
        self.interaction_indexes = [list(i) for i in interaction_indexes]
        self.add_vit_feature = add_vit_feature
        dim = self.embed_dim
        heads = deform_num_heads or dim // 64

        self._build_prior(dim, conv_inplane, norm_cfg)
        stages = len(self.interaction_indexes)
        self.interactions = nn.Sequential(*(InteractionBlock(
            dim,
            heads,
            num_points,
            deform_ratio,
            cffn_ratio,
            gate_init,
            drop_path_rate,
            extra_extractors=i == stages - 1) for i in range(stages)))
        self._build_output(dim, norm_cfg)

    @staticmethod
    def _check_indexes(indexes: Sequence[Sequence[int]], depth: int) -> None:
        flat = [i for stage in indexes for i in range(stage[0], stage[-1] + 1)]
        if flat != list(range(depth)):
            raise ValueError(
                f'interaction_indexes {[list(s) for s in indexes]} must '
                f'cover the {depth} ViT blocks in order, each stage a '
                '[first, last] range')

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        c1, prior, prior_shapes, token_shape, extract = self._prior_inputs(x)
        spatial, starts = level_index(prior_shapes, x.device)
        inject = (reference_points([token_shape], x.device), spatial, starts)
        batch, dim = x.shape[0], self.embed_dim

        prefix, tokens, _ = self.embed(x)

        vit_maps = []
        for stage, (first, last) in zip(self.interactions,
                                        self.interaction_indexes):
            tokens, prefix, prior = stage(tokens, prefix, prior,
                                          self.blocks[first:last + 1], inject,
                                          extract)
            vit_maps.append(
                tokens.transpose(1, 2).reshape(batch, dim, *token_shape))

        return self._output_pyramid(c1, prior, prior_shapes, vit_maps)
