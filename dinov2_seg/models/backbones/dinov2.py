"""DINOv2 vision transformer as an mmsegmentation backbone."""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.arch_settings import ARCH_SETTINGS, resolve_arch
from .dinov2_layers import Block, PatchEmbed
from .pretrained import StrictPretrainedMixin

__all__ = [
    'ARCH_SETTINGS', 'DinoViTBase', 'DinoVisionTransformer', 'center_pad',
    'resolve_arch'
]


def center_pad(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad H and W up to a multiple, splitting the padding around the
    image (the extra pixel of an odd padding goes right/bottom)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad order: W first, then H
        total = math.ceil(size / multiple) * multiple - size
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class DinoViTBase(StrictPretrainedMixin, BaseModule):
    """The parts of a DINOv2 ViT that every model built on it runs: patch
    embedding, class and register tokens, positional embedding and blocks,
    under the names of Meta's files.

    Subclasses add what they do with the block outputs
    (:class:`DinoVisionTransformer`: the final norm; ``DinoViTAdapter``: the
    adapter). ``frozen`` keeps these parts in eval mode without gradients.

    Args:
        arch, img_size, patch_size, drop_path_rate, layer_scale_init,
            init_cfg: As for :class:`DinoVisionTransformer`.
        frozen (bool): Keep these parts in eval mode without gradients.
        interpolate_offset (float, optional): Positional-embedding resize
            offset; defaults to the arch's.
        interpolate_antialias (bool, optional): Antialiased resize; defaults
            to the arch's.
        with_cp (bool): Recompute each block in the backward pass instead of
            keeping its activations (activation checkpointing), for
            fine-tuning large backbones in bounded memory.
    """
    pretrained_file_hint = 'checkpoints/dinov2_<arch>_pretrain.pth'

    def __init__(self,
                 arch: Union[str, dict] = 'vits14',
                 img_size: int = 518,
                 patch_size: int = 14,
                 frozen: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1.0,
                 interpolate_offset: Optional[float] = None,
                 interpolate_antialias: Optional[bool] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = arch if isinstance(arch, str) else 'custom'
        settings = resolve_arch(arch)
        dim, depth = settings['embed_dim'], settings['depth']
        self.embed_dim = dim
        self.patch_size = patch_size
        self.frozen = frozen
        self.with_cp = with_cp
        self.num_register_tokens = settings['num_register_tokens']
        self.num_prefix_tokens = 1 + self.num_register_tokens
        self.interpolate_offset = settings['interpolate_offset'] \
            if interpolate_offset is None else interpolate_offset
        self.interpolate_antialias = settings['interpolate_antialias'] \
            if interpolate_antialias is None else interpolate_antialias

        self.patch_embed = PatchEmbed(patch_size, 3, dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(
                torch.zeros(1, self.num_register_tokens, dim))
        else:
            self.register_tokens = None
        drop_rates = [
            drop_path_rate * i / max(depth - 1, 1) for i in range(depth)
        ]
        self.blocks = nn.ModuleList(
            Block(
                dim,
                settings['num_heads'],
                settings['ffn'],
                layer_scale_init=layer_scale_init,
                drop_path=rate) for rate in drop_rates)
        self._pos_embed_cache: dict = {}
        self._init_random_weights()
        if frozen:
            for param in self._vit_parameters():
                param.requires_grad_(False)

    def _vit_parameters(self):
        yield from (self.cls_token, self.pos_embed)
        if self.register_tokens is not None:
            yield self.register_tokens
        yield from self.patch_embed.parameters()
        yield from self.blocks.parameters()

    def _init_random_weights(self) -> None:
        # The official initialisation, so that a randomly initialised ViT
        # behaves like Meta's untrained one.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> 'DinoViTBase':
        super().train(mode)
        if self.frozen:
            self.patch_embed.eval()
            self.blocks.eval()
        return self

    def interpolate_pos_embed(self, grid: Tuple[int, int]) -> Tensor:
        """Positional embedding of the class token and an ``grid`` of
        patches, resized bicubically from the stored square grid.

        Without gradients the last result is cached (the slide windows of a
        test image share one grid); the key holds the parameter's version,
        so loading or changing the weights refreshes it.
        """
        if torch.is_grad_enabled():
            return self._resize_pos_embed(grid)
        key = (grid, self.pos_embed.device, self.pos_embed.dtype,
               self.pos_embed._version, self.pos_embed.data_ptr())
        if self._pos_embed_cache.get('key') != key:
            self._pos_embed_cache = dict(
                key=key, value=self._resize_pos_embed(grid))
        return self._pos_embed_cache['value']

    def _resize_pos_embed(self, grid: Tuple[int, int]) -> Tensor:
        pos_embed = self.pos_embed
        stored = pos_embed.shape[1] - 1
        height, width = grid
        if height * width == stored and height == width:
            return pos_embed
        side = int(math.sqrt(stored))
        patch_pos = pos_embed[:, 1:].float().reshape(1, side, side, -1)
        if self.interpolate_offset:
            # Scale factors rather than a size: the resampling grid then
            # differs slightly, and the released original models expect it.
            size_kwargs = dict(
                scale_factor=((height + self.interpolate_offset) / side,
                              (width + self.interpolate_offset) / side))
        else:
            size_kwargs = dict(size=(height, width))
        patch_pos = F.interpolate(
            patch_pos.permute(0, 3, 1, 2),
            mode='bicubic',
            antialias=self.interpolate_antialias,
            **size_kwargs)
        patch_pos = patch_pos.permute(0, 2, 3,
                                      1).reshape(1, height * width, -1)
        return torch.cat([pos_embed[:, :1].float(), patch_pos],
                         dim=1).to(pos_embed.dtype)

    def embed(self, x: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """Embed an image batch (sides multiples of the patch size, or the
        remainder is dropped).

        Returns:
            tuple: the prefix tokens (the class token with its positional
            embedding, then the registers), the patch tokens with theirs,
            and the patch grid (h, w).
        """
        patches, grid = self.patch_embed(x)
        pos_embed = self.interpolate_pos_embed(grid)
        batch = patches.shape[0]
        prefix = self.cls_token.expand(batch, -1, -1) + pos_embed[:, :1]
        if self.register_tokens is not None:
            prefix = torch.cat(
                [prefix, self.register_tokens.expand(batch, -1, -1)], 1)
        return prefix, patches + pos_embed[:, 1:], grid

    def forward_block(self,
                      index: int,
                      tokens: Tensor,
                      attn_mask: Optional[Tensor] = None) -> Tensor:
        """Block ``index`` on ``tokens`` (recomputed in the backward pass
        when ``with_cp``); ``attn_mask`` as in :class:`Attention`."""
        block = self.blocks[index]
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(block, tokens, attn_mask, use_reentrant=False)
        return block(tokens, attn_mask)


@MODELS.register_module()
class DinoVisionTransformer(DinoViTBase):
    """DINOv2 ViT returning the official segmentation features.

    The forward pass center-pads the input to a multiple of the patch size and
    returns, for every block in ``out_indices``, its tokens after the final
    LayerNorm with the class and register tokens dropped, as NCHW maps of
    stride ``patch_size``.

    Args:
        arch (str | dict): A preset (``vits14``, ``vitb14``, ``vitl14``,
            ``vitg14`` and their ``_reg4`` variants) or a dict with the keys
            of ``ARCH_SETTINGS['vits14']``.
        img_size (int): Pretraining resolution, which sets the size of the
            stored positional embedding (518 for the released models).
        patch_size (int): Patch size. Defaults to 14.
        out_indices (Sequence[int], optional): Blocks whose outputs are
            returned; negative indices count from the end. Defaults to the
            last four blocks.
        frozen (bool): Keep the backbone in eval mode without gradients, as
            in the official linear-probing recipes. Set False to fine-tune.
        drop_path_rate (float): Stochastic depth rate at the last block
            (linearly increasing), only useful when fine-tuning.
        layer_scale_init (float): Initial LayerScale value.
        with_cp (bool): Activation checkpointing of the blocks (see
            :class:`DinoViTBase`).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...)``
            loads a backbone file (Meta's layout; path or URL) strictly.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'vits14',
                 img_size: int = 518,
                 patch_size: int = 14,
                 out_indices: Optional[Sequence[int]] = None,
                 frozen: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1.0,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            frozen=frozen,
            drop_path_rate=drop_path_rate,
            layer_scale_init=layer_scale_init,
            with_cp=with_cp,
            init_cfg=init_cfg)
        depth, dim = len(self.blocks), self.embed_dim
        if out_indices is None:
            out_indices = range(max(depth - 4, 0), depth)
        if any(not -depth <= i < depth for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range '
                             f'for a {depth}-block backbone')
        self.out_indices = tuple(i % depth for i in out_indices)
        self._last_needed_block = max(self.out_indices)
        # Unused for segmentation; kept so that the released files load with
        # every key accounted for.
        self.mask_token = nn.Parameter(
            torch.zeros(1, dim), requires_grad=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if frozen:
            self.norm.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> 'DinoVisionTransformer':
        return super().train(mode and not self.frozen)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            return self._intermediate_features(x)

    def prepare_tokens(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """The tokens entering the first block, (B, prefix + h * w, D) with
        the class and register tokens first, and the patch grid (h, w) of
        the center-padded input."""
        prefix, patches, grid = self.embed(center_pad(x, self.patch_size))
        return torch.cat([prefix, patches], 1), grid

    def _intermediate_features(self, x: Tensor) -> Tuple[Tensor, ...]:
        tokens, (height, width) = self.prepare_tokens(x)
        skip, batch = self.num_prefix_tokens, tokens.shape[0]
        outputs = []
        for index in range(len(self.blocks)):
            tokens = self.forward_block(index, tokens)
            if index in self.out_indices:
                patches = self.norm(tokens)[:, skip:]
                outputs.append(
                    patches.reshape(batch, height, width,
                                    -1).permute(0, 3, 1, 2).contiguous())
            if index == self._last_needed_block:
                break
        return tuple(outputs)
