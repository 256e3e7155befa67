"""DINOv3's ViT-Adapter (Meta's ``DINOv3_Adapter``, dinov3/eval/segmentation/
models/backbone/dinov3_adapter.py), the backbone of Meta's released
DINOv3 Mask2Former (``dinov3_vit7b16_ade20k_m2f_head-*.pth``).

Unlike DINOv2's adapter (:class:`DinoViTAdapter`) the ViT is left alone:
it runs frozen and unchanged, and four of its (final-normed) block outputs
feed extractor-only stages that refine a convolutional spatial prior. The
parts shared with DINOv2's adapter (spatial prior module, extractor,
deformable attention, conv FFN) compute the same thing and come from
``adapter_modules``.
"""
import warnings
from typing import List, Optional, Sequence, Tuple, Union

from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.arch_settings import resolve_dinov3_arch
from .adapter_modules import AdapterPyramidMixin, ExtractionBlock
from .dinov3 import DinoV3VisionTransformer


def meta_interaction_indexes(depth: int) -> List[int]:
    """The ViT blocks Meta's adapter reads (``_get_backbone_out_indices``,
    FOUR_EVEN_INTERVALS): [4, 11, 17, 23] for 24 blocks (the paper's),
    else the last block of every quarter, e.g. [9, 19, 29, 39] for 40."""
    if depth == 24:
        return [4, 11, 17, 23]
    return [i * (depth // 4) - 1 for i in range(1, 5)]


@MODELS.register_module()
class DinoV3Adapter(AdapterPyramidMixin, BaseModule):
    """Frozen DINOv3 ViT + Meta's DINOv3 adapter, returning a 4-level
    pyramid at strides 4, 8, 16 and 32 (each ``embed_dim`` channels,
    batch-normalised).

    The ViT (``self.vit``, a :class:`DinoV3VisionTransformer` kept in eval
    mode: no RoPE augmentation, no stochastic depth) gives the patch tokens
    after the blocks ``interaction_indexes``, each through the final norm
    (Meta's ``get_intermediate_layers`` default). Stage i's extractor(s)
    let the spatial prior (strides 8/16/32) attend to the tokens of block
    ``interaction_indexes[i]``. The pyramid is the prior (its stride-8
    level also upsampled and added to the stride-4 stem map), plus the four
    token maps resized to each level.

    The input is not padded and must have sides that are multiples of 32,
    as in Meta's code (whose DWConv splits the prior into 16 + 4 + 1 parts).

    Args:
        arch (str | dict): DINOv3 preset or settings, see
            :class:`DinoV3VisionTransformer`.
        interaction_indexes (Sequence[int], optional): ViT blocks read by
            the four stages. Defaults to Meta's rule for the depth
            (:func:`meta_interaction_indexes`).
        deform_num_heads (int): Heads of the deformable attentions.
        num_points (int): Sampling points per head.
        deform_ratio (float): Width of the deformable attention values
            relative to ``embed_dim``.
        cffn_ratio (float): Hidden width of the extractors' conv FFN
            relative to ``embed_dim``.
        conv_inplane (int): Width of the spatial prior stem.
        extra_extractors (bool): Two more extractors in the last stage.
        add_vit_feature (bool): Add the resized token maps to the pyramid.
        norm_cfg (dict): Norm of the prior stem and the output pyramid.
        drop_path_rate (float): Stochastic depth of the extractors' FFNs
            (Meta's 0.3; only acts in training).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)``
            loads Meta's DINOv3 backbone file (or timm's / Hugging Face's
            layout of it) into the ViT, strictly. The adapter's own weights
            come from a segmentor checkpoint (Meta's head file).
    """
    # Every ViT tensor comes from the backbone file, under this prefix.
    vit_prefix = 'vit.'

    def __init__(self,
                 arch: Union[str, dict] = 'vit7b16',
                 interaction_indexes: Optional[Sequence[int]] = None,
                 deform_num_heads: int = 16,
                 num_points: int = 4,
                 deform_ratio: float = 0.5,
                 cffn_ratio: float = 0.25,
                 conv_inplane: int = 64,
                 extra_extractors: bool = True,
                 add_vit_feature: bool = True,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 drop_path_rate: float = 0.3,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        depth = resolve_dinov3_arch(arch)['depth']
        if interaction_indexes is None:
            interaction_indexes = meta_interaction_indexes(depth)
        indexes = list(interaction_indexes)
        if len(indexes) != 4 or indexes != sorted(
                set(indexes)) or not all(0 <= i < depth for i in indexes):
            raise ValueError(
                f'interaction_indexes {indexes} must be 4 increasing blocks '
                f'of the {depth}-block ViT (one per pyramid level)')
        self.interaction_indexes = indexes
        self.vit = DinoV3VisionTransformer(
            arch=arch,
            out_indices=indexes,
            frozen=True,
            final_norm=True,
            init_cfg=init_cfg)
        # Read by the frozen-backbone checkpoint logic: the ViT never
        # trains, the adapter does.
        self.frozen = True
        self.arch = self.vit.arch
        self.embed_dim = dim = self.vit.embed_dim
        self.patch_size = self.vit.patch_size
        self.add_vit_feature = add_vit_feature

        self._build_prior(dim, conv_inplane, norm_cfg)
        self.interactions = nn.Sequential(*(ExtractionBlock(
            dim,
            deform_num_heads,
            num_points,
            deform_ratio,
            cffn_ratio,
            drop_path_rate,
            extra_extractors=extra_extractors and i == len(indexes) - 1)
                                            for i in range(len(indexes))))
        self._build_output(dim, norm_cfg)

    @property
    def checkpoint_layout(self) -> dict:
        return self.vit.checkpoint_layout

    def init_weights(self) -> None:
        """Load the ViT from ``init_cfg``'s backbone file (strictly), or
        warn that it stays random; the adapter keeps its initialisation
        until a segmentor checkpoint fills it."""
        init_cfg = self.init_cfg
        if init_cfg and init_cfg.get('type') == 'Pretrained':
            try:
                self.vit.load_pretrained_file(init_cfg['checkpoint'])
            except ValueError as error:
                raise ValueError(
                    f'{error}\nDinoV3Adapter(arch={self.arch!r}) reads a '
                    f'DINOv3 ViT of width {self.embed_dim}: '
                    'model.backbone.init_cfg.checkpoint must be Meta\'s '
                    'DINOv3 backbone file of that arch (e.g. '
                    'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth for '
                    'the released Mask2Former).') from None
        elif init_cfg:
            raise ValueError(
                f"DinoV3Adapter init_cfg {dict(init_cfg)} is not supported: "
                "use dict(type='Pretrained', checkpoint=<DINOv3 backbone "
                "file>)")
        else:
            warnings.warn(
                f'DinoV3Adapter(arch={self.arch!r}) has no backbone file '
                'configured, so its ViT is randomly initialised. Set '
                "model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint='checkpoints/dinov3_<arch>_pretrain_lvd1689m-"
                "<hash>.pth') (gated: see tools/download_checkpoints.py "
                '--list), or load a whole segmentor checkpoint.')
        self._is_init = True

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        c1, prior, prior_shapes, _, extract = self._prior_inputs(x)
        vit_maps = self.vit(x)
        for stage, vit_map in zip(self.interactions, vit_maps):
            prior = stage(prior, vit_map.flatten(2).transpose(1, 2), extract)

        return self._output_pyramid(c1, prior, prior_shapes, vit_maps)
