"""DINOv2 vision transformer as an mmsegmentation backbone."""
import math
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn

from dinov2_seg.checkpoints import load_backbone_checkpoint
from .dinov2_layers import Block, PatchEmbed

_SIZES = {
    'vits14': dict(embed_dim=384, depth=12, num_heads=6, ffn='mlp'),
    'vitb14': dict(embed_dim=768, depth=12, num_heads=12, ffn='mlp'),
    'vitl14': dict(embed_dim=1024, depth=24, num_heads=16, ffn='mlp'),
    'vitg14': dict(embed_dim=1536, depth=40, num_heads=24, ffn='swiglu'),
}
# The register models were trained with a different positional-embedding
# resize (plain output size, antialiased) than the original ones (a +0.1
# scale-factor offset kept for backward compatibility); features only match
# the released weights if each family keeps its own.
_ORIGINAL = dict(
    num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False)
_REGISTERS = dict(
    num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)

ARCH_SETTINGS: Dict[str, dict] = {
    **{
        name: dict(size, **_ORIGINAL)
        for name, size in _SIZES.items()
    },
    **{
        f'{name}_reg4': dict(size, **_REGISTERS)
        for name, size in _SIZES.items()
    },
}


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Return the full settings of a preset name or a custom arch dict."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise KeyError(f'Unknown DINOv2 arch {arch!r}; expected one of '
                           f'{sorted(ARCH_SETTINGS)} or a dict of settings')
        return dict(ARCH_SETTINGS[arch])
    missing = set(ARCH_SETTINGS['vits14']) - set(arch)
    if missing:
        raise KeyError(f'DINOv2 arch dict lacks {sorted(missing)}; '
                       f'start from e.g. ARCH_SETTINGS["vits14"]')
    return dict(arch)


def center_pad(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad H and W up to a multiple, splitting the padding around the
    image (the extra pixel of an odd padding goes right/bottom)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad order: W first, then H
        total = math.ceil(size / multiple) * multiple - size
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


@MODELS.register_module()
class DinoVisionTransformer(BaseModule):
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
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = arch if isinstance(arch, str) else 'custom'
        settings = resolve_arch(arch)
        dim, depth = settings['embed_dim'], settings['depth']
        self.embed_dim = dim
        self.patch_size = patch_size
        self.num_register_tokens = settings['num_register_tokens']
        self.interpolate_offset = settings['interpolate_offset']
        self.interpolate_antialias = settings['interpolate_antialias']
        if out_indices is None:
            out_indices = range(max(depth - 4, 0), depth)
        if any(not -depth <= i < depth for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range '
                             f'for a {depth}-block backbone')
        self.out_indices = tuple(i % depth for i in out_indices)
        self._last_needed_block = max(self.out_indices)
        self.frozen = frozen

        self.patch_embed = PatchEmbed(patch_size, 3, dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(
                torch.zeros(1, self.num_register_tokens, dim))
        else:
            self.register_tokens = None
        # Unused for segmentation; kept so that the released files load with
        # every key accounted for.
        self.mask_token = nn.Parameter(
            torch.zeros(1, dim), requires_grad=False)
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
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._pos_embed_cache: dict = {}
        self._init_random_weights()
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def _init_random_weights(self) -> None:
        # The official initialisation, so that a randomly initialised backbone
        # behaves like Meta's untrained one.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint strictly, or warn that the weights
        stay random.

        mmengine's ``Pretrained`` initialiser loads non-strictly and only logs
        mismatches, which would silently leave a wrong-size or truncated
        backbone partly random; here a mismatch is an error.
        """
        if self.init_cfg and self.init_cfg.get('type') == 'Pretrained':
            load_backbone_checkpoint(self, self.init_cfg['checkpoint'])
        elif self.init_cfg:
            super().init_weights()
        else:
            warnings.warn(
                f'DinoVisionTransformer(arch={self.arch!r}) has no checkpoint '
                'configured, so the backbone is randomly initialised. Set '
                "model.backbone.init_cfg=dict(type='Pretrained', "
                "checkpoint='checkpoints/dinov2_<arch>_pretrain.pth') to use "
                'the released weights.')
        self._is_init = True

    def train(self, mode: bool = True) -> 'DinoVisionTransformer':
        return super().train(mode and not self.frozen)

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

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            return self._intermediate_features(x)

    def _intermediate_features(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = center_pad(x, self.patch_size)
        tokens, (height, width) = self.patch_embed(x)
        batch = tokens.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], 1)
        tokens = tokens + self.interpolate_pos_embed((height, width))
        if self.register_tokens is not None:
            tokens = torch.cat([
                tokens[:, :1],
                self.register_tokens.expand(batch, -1, -1), tokens[:, 1:]
            ], 1)
        skip = 1 + self.num_register_tokens
        outputs = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in self.out_indices:
                patches = self.norm(tokens)[:, skip:]
                outputs.append(
                    patches.reshape(batch, height, width,
                                    -1).permute(0, 3, 1, 2).contiguous())
            if index == self._last_needed_block:
                break
        return tuple(outputs)
