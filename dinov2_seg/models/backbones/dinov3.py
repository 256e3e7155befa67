"""DINOv3 vision transformer as an mmsegmentation backbone."""
import math
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.arch_settings import DINOV3_ARCH_SETTINGS, resolve_dinov3_arch
from dinov2_seg.checkpoints import load_backbone_checkpoint
from .dinov2_layers import PatchEmbed
from .dinov3_layers import (LAYER_NORM_EPS, Block, RopePositionEmbedding,
                            RopeTables)

__all__ = ['DINOV3_ARCH_SETTINGS', 'DinoV3VisionTransformer']


@MODELS.register_module()
class DinoV3VisionTransformer(BaseModule):
    """DINOv3 ViT returning the segmentation features in the format of
    :class:`~dinov2_seg.models.backbones.DinoVisionTransformer`.

    For every block in ``out_indices`` the forward pass returns its patch
    tokens, after the final LayerNorm unless ``final_norm=False``, as an
    (B, C, H // 16, W // 16) map; the class and storage tokens are dropped
    (:meth:`intermediate_tokens` has them). Unlike DINOv2 nothing is padded:
    as in Meta's code, the patch convolution drops the last ``H % 16`` rows
    and ``W % 16`` columns. Positions come from RoPE only, so any grid
    works without resizing a table.

    Args:
        arch (str | dict): A preset of Meta's hub (``vits16``,
            ``vits16plus``, ``vitb16``, ``vitl16``, ``vitl16_sat493m``,
            ``vitl16plus``, ``vith16plus``, ``vit7b16``) or a dict of
            settings (keys of ``DINOV3_ARCH_SETTINGS['vits16']``; the ones
            left out take the common values).
        patch_size (int): Patch size. Defaults to 16 (every DINOv3 file).
        out_indices (Sequence[int], optional): Blocks whose outputs are
            returned; negative indices count from the end. Defaults to the
            last four blocks.
        frozen (bool): Keep the backbone in eval mode without gradients, as
            Meta's segmentation recipes do. Set False to fine-tune.
        drop_path_rate (float): Stochastic depth rate, the same for every
            block as in Meta's DINOv3 (only useful when fine-tuning).
        layer_scale_init (float): Initial LayerScale value (Meta's: 1e-5).
        final_norm (bool): Apply the final LayerNorm to the returned
            features (Meta's linear recipe does; its adapter does not).
        rope_train_augment (dict, optional): Meta's pretraining RoPE
            coordinate augmentations, e.g. ``dict(rescale=2.0)`` as in the
            hub archs, or with ``shift`` / ``jitter``. Off by default: Meta
            keeps the backbone in eval mode (no augmentation) while training
            a head, and mmengine's runner calls ``model.train()`` on
            everything, so they must not follow the train flag alone. When
            set they act only while the backbone is actually trained
            (``frozen=False`` and train mode).
        with_cp (bool): Recompute each block in the backward pass instead of
            keeping its activations (activation checkpointing), for
            fine-tuning large backbones in bounded memory.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)``
            loads a backbone file strictly (Meta's
            ``dinov3_<arch>_pretrain_<data>-<hash>.pth``, or timm's or
            Hugging Face's layout, converted).
    """
    # Prefixes of the keys loaded from a backbone file (None: all of them).
    backbone_file_keys: Optional[Tuple[str, ...]] = None

    def __init__(self,
                 arch: Union[str, dict] = 'vits16',
                 patch_size: int = 16,
                 out_indices: Optional[Sequence[int]] = None,
                 frozen: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1e-5,
                 final_norm: bool = True,
                 rope_train_augment: Optional[dict] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = arch if isinstance(arch, str) else 'custom'
        settings = resolve_dinov3_arch(arch)
        self.settings = settings
        dim, depth = settings['embed_dim'], settings['depth']
        self.embed_dim = dim
        self.num_heads = settings['num_heads']
        self.patch_size = patch_size
        self.frozen = frozen
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.num_storage_tokens = settings['num_storage_tokens']
        self.num_prefix_tokens = 1 + self.num_storage_tokens
        if dim % self.num_heads:
            raise ValueError(f'embed_dim {dim} is not a multiple of '
                             f'num_heads {self.num_heads}')

        self.patch_embed = PatchEmbed(patch_size, 3, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if self.num_storage_tokens:
            self.storage_tokens = nn.Parameter(
                torch.zeros(1, self.num_storage_tokens, dim))
        else:
            self.storage_tokens = None
        # Unused for segmentation; kept so that the released files load with
        # every key accounted for.
        self.mask_token = nn.Parameter(
            torch.zeros(1, dim), requires_grad=False)
        self.rope_embed = RopePositionEmbedding(dim // self.num_heads,
                                                settings['rope_base'],
                                                rope_train_augment)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                self.num_heads,
                ffn=settings['ffn'],
                ffn_ratio=settings['ffn_ratio'],
                swiglu_align=settings['swiglu_align'],
                qkv_bias=settings['qkv_bias'],
                layer_scale_init=layer_scale_init,
                drop_path=drop_path_rate) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.cls_norm = nn.LayerNorm(
            dim, eps=LAYER_NORM_EPS) if settings['untie_cls_norm'] else None
        # Pretraining normed the local crops' class tokens with this; never
        # applied here, kept so that the files holding it load strictly.
        self.local_cls_norm = nn.LayerNorm(
            dim, eps=LAYER_NORM_EPS) if settings['local_cls_norm'] else None
        if self.local_cls_norm is not None:
            self.local_cls_norm.requires_grad_(False)

        if out_indices is None:
            out_indices = range(max(depth - 4, 0), depth)
        if any(not -depth <= i < depth for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range '
                             f'for a {depth}-block backbone')
        self.out_indices = tuple(i % depth for i in out_indices)
        self._rope: Optional[RopeTables] = None  # see prepare_tokens
        self._init_random_weights()
        if frozen:
            self.requires_grad_(False)
            self.eval()

    @property
    def checkpoint_layout(self) -> dict:
        """What converting timm's and Hugging Face's layouts to Meta's needs
        to know about this model (see checkpoints/foreign_dinov3.py)."""
        return dict(self.settings, family='dinov3')

    def _init_random_weights(self) -> None:
        # Meta's initialisation (init_weights_vit), so that a randomly
        # initialised ViT behaves like Meta's untrained one.
        nn.init.normal_(self.cls_token, std=0.02)
        if self.storage_tokens is not None:
            nn.init.normal_(self.storage_tokens, std=0.02)
        bound = 1 / math.sqrt(3 * self.patch_size**2)
        nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s backbone file strictly, or warn that the ViT
        stays random.

        mmengine's ``Pretrained`` initialiser loads non-strictly and only logs
        mismatches, which would silently leave a wrong-size or truncated
        backbone partly random; here a mismatch is an error.
        """
        if self.init_cfg and self.init_cfg.get('type') == 'Pretrained':
            prefixes = self.backbone_file_keys
            load_backbone_checkpoint(
                self, self.init_cfg['checkpoint'],
                None if prefixes is None else lambda k: k.startswith(prefixes))
        elif self.init_cfg:
            super().init_weights()
        else:
            warnings.warn(
                f'{type(self).__name__}(arch={self.arch!r}) has no checkpoint '
                'configured, so the backbone is randomly initialised. Set '
                "model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint='checkpoints/dinov3_<arch>_pretrain_lvd1689m-"
                "<hash>.pth') to use Meta's weights (gated: request them "
                'under the DINOv3 License, see tools/download_checkpoints.py '
                '--list), or load a whole segmentor checkpoint.')
        self._is_init = True

    def train(self, mode: bool = True) -> 'DinoV3VisionTransformer':
        """A frozen backbone stays in eval mode: no stochastic depth and no
        RoPE augmentation while a head trains."""
        return super().train(mode and not self.frozen)

    def prepare_tokens(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """The tokens entering the first block, (B, 1 + storage + h * w, D)
        with the class and storage tokens first (they carry no position),
        and the patch grid (h, w) = (H // 16, W // 16).

        Also computes the grid's RoPE tables, which :meth:`forward_block`
        then uses by default.
        """
        patches, grid = self.patch_embed(x)
        batch = patches.shape[0]
        tokens = [self.cls_token.expand(batch, -1, -1)]
        if self.storage_tokens is not None:
            tokens.append(self.storage_tokens.expand(batch, -1, -1))
        self._rope = self.rope_embed(grid)
        return torch.cat(tokens + [patches], 1), grid

    def forward_block(self,
                      index: int,
                      tokens: Tensor,
                      attn_mask: Optional[Tensor] = None,
                      rope: Optional[RopeTables] = None) -> Tensor:
        """Block ``index`` on ``tokens`` (recomputed in the backward pass
        when ``with_cp``); ``attn_mask`` as in
        :class:`~.dinov3_layers.RopeAttention`.

        ``rope`` defaults to the tables of the grid of the last
        :meth:`prepare_tokens` call, so that code written for DINOv2's
        ``forward_block(index, tokens, attn_mask)`` (EoMT) runs unchanged.
        """
        rope = self._rope if rope is None else rope
        if rope is None:
            raise RuntimeError(
                'DinoV3VisionTransformer.forward_block needs the RoPE tables '
                'of the patch grid: call prepare_tokens first, or pass rope')
        block = self.blocks[index]
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(
                block, tokens, rope, attn_mask, use_reentrant=False)
        return block(tokens, rope, attn_mask)

    def normalize(self, tokens: Tensor) -> Tensor:
        """The final norm of a block output (B, N, D); with an untied class
        norm the class and storage tokens get ``cls_norm``."""
        if self.cls_norm is None:
            return self.norm(tokens)
        skip = self.num_prefix_tokens
        return torch.cat(
            [self.cls_norm(tokens[:, :skip]),
             self.norm(tokens[:, skip:])], 1)

    def intermediate_tokens(self,
                            x: Tensor) -> Tuple[List[Tensor], Tuple[int, int]]:
        """All tokens (B, 1 + storage + h * w, D) after each block of
        ``out_indices`` (normed if ``final_norm``), class token first, then
        the storage tokens, then the patches row by row; and the grid."""
        tokens, grid = self.prepare_tokens(x)
        rope = self._rope
        outputs = []
        for index in range(max(self.out_indices) + 1):
            tokens = self.forward_block(index, tokens, rope=rope)
            if index in self.out_indices:
                outputs.append(
                    self.normalize(tokens) if self.final_norm else tokens)
        return outputs, grid

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            outputs, (height, width) = self.intermediate_tokens(x)
        skip, batch = self.num_prefix_tokens, x.shape[0]
        return tuple(tokens[:,
                            skip:].reshape(batch, height, width, -1).permute(
                                0, 3, 1, 2).contiguous() for tokens in outputs)
