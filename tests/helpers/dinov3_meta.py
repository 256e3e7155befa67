"""Meta's DINOv3 ViT backbone files as released: their names, and the names
and shapes of their tensors, with random values.

Written out from Meta's code (facebookresearch/dinov3 at 6876159:
``dinov3/hub/backbones.py`` builds each arch, ``dinov3/models/
vision_transformer.py`` and ``dinov3/layers/`` name the tensors) rather than
read from the project's modules, so a test that loads these files checks the
project against the released layout.
"""
import math
from typing import Dict, Optional, Tuple

import torch

Shape = Tuple[int, ...]

# dinov3/hub/backbones.py: embed_dim, depth, num_heads, FFN, FFN hidden width
# (mlp: dim * ffn_ratio; swiglu: int(dim * ffn_ratio * 2 / 3) rounded up to
# 8, to 64 for the 7B), qkv bias, local-crop class norm.
HUB_ARCHS = {
    'vits16': (384, 12, 6, 'mlp', 1536, True, False),
    'vits16plus': (384, 12, 6, 'swiglu', 1536, True, False),
    'vitb16': (768, 12, 12, 'mlp', 3072, True, False),
    'vitl16': (1024, 24, 16, 'mlp', 4096, True, False),
    # dinov3_vitl16(weights=SAT493M) unties the local-crop class norm.
    'vitl16_sat493m': (1024, 24, 16, 'mlp', 4096, True, True),
    'vitl16plus': (1024, 24, 16, 'swiglu', 4096, True, False),
    'vith16plus': (1280, 32, 20, 'swiglu', 5120, True, False),
    'vit7b16': (4096, 40, 32, 'swiglu', 8192, False, True),
}
# Hub parameter counts (millions), from the shapes above: S 21.6, S+ 28.7,
# B 85.7, L 303.2, L+ 403.9, H+ 840.6, 7B 6716 (MODEL_CARD: 21M, 29M,
# 86M, 300M, -, 840M, 6.7B).
PARAMETER_MILLIONS = {
    'vits16': 21.60,
    'vits16plus': 28.70,
    'vitb16': 85.67,
    'vitl16': 303.15,
    'vitl16plus': 403.92,
    'vith16plus': 840.63,
    'vit7b16': 6716.04,
}
# dinov3/hub/backbones.py: the file of each hub model and weight set,
# dinov3_{arch}_pretrain_{weights}-{hash}.pth.
RELEASED_FILES = {
    'dinov3_vits16_pretrain_lvd1689m-08c60483.pth': 'vits16',
    'dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth': 'vits16plus',
    'dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth': 'vitb16',
    'dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth': 'vitl16',
    'dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth': 'vitl16_sat493m',
    'dinov3_vitl16plus_pretrain_lvd1689m-46503df0.pth': 'vitl16plus',
    'dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth': 'vith16plus',
    'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth': 'vit7b16',
    'dinov3_vit7b16_pretrain_sat493m-a6675841.pth': 'vit7b16',
}


def meta_manifest(arch: str, depth: Optional[int] = None) -> Dict[str, Shape]:
    """Every tensor of Meta's file for ``arch`` with its shape (the first
    ``depth`` blocks only, if given)."""
    dim, full_depth, heads, ffn, hidden, qkv_bias, local = HUB_ARCHS[arch]
    shapes = {
        'cls_token': (1, 1, dim),
        'storage_tokens': (1, 4, dim),
        'mask_token': (1, dim),
        'patch_embed.proj.weight': (dim, 3, 16, 16),
        'patch_embed.proj.bias': (dim, ),
        'rope_embed.periods': (dim // heads // 4, ),
        'norm.weight': (dim, ),
        'norm.bias': (dim, ),
    }
    if local:
        shapes['local_cls_norm.weight'] = (dim, )
        shapes['local_cls_norm.bias'] = (dim, )
    for i in range(full_depth if depth is None else depth):
        b = f'blocks.{i}.'
        shapes.update({
            b + 'norm1.weight': (dim, ),
            b + 'norm1.bias': (dim, ),
            b + 'attn.qkv.weight': (3 * dim, dim),
            b + 'attn.proj.weight': (dim, dim),
            b + 'attn.proj.bias': (dim, ),
            b + 'ls1.gamma': (dim, ),
            b + 'norm2.weight': (dim, ),
            b + 'norm2.bias': (dim, ),
            b + 'ls2.gamma': (dim, ),
        })
        if qkv_bias:  # LinearKMaskedBias: the bias and its (buffer) mask
            shapes[b + 'attn.qkv.bias'] = (3 * dim, )
            shapes[b + 'attn.qkv.bias_mask'] = (3 * dim, )
        if ffn == 'mlp':
            names = [('fc1', (hidden, dim)), ('fc2', (dim, hidden))]
        else:
            names = [('w1', (hidden, dim)), ('w2', (hidden, dim)),
                     ('w3', (dim, hidden))]
        for name, shape in names:
            shapes[b + f'mlp.{name}.weight'] = shape
            shapes[b + f'mlp.{name}.bias'] = (shape[0], )
    return shapes


def meta_periods(head_dim: int) -> torch.Tensor:
    """RopePositionEmbedding._init_weights with base 100, float32."""
    return 100.0**(2 * torch.arange(head_dim // 4, dtype=torch.float32) /
                   (head_dim // 2))


def fabricate_meta_state(arch: str,
                         depth: Optional[int] = None,
                         seed: int = 0,
                         device: Optional[str] = None) -> dict:
    """Random tensors under Meta's names and shapes, with non-trivial norms,
    LayerScale and biases (the key's third of the qkv bias included: the
    mask must zero it), and the buffers as Meta's files hold them (RoPE
    periods, key-bias mask). ``device='meta'`` gives shapes only."""
    manifest = meta_manifest(arch, depth)
    if device == 'meta':
        return {k: torch.empty(s, device='meta') for k, s in manifest.items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in manifest.items():
        if name == 'rope_embed.periods':
            value = meta_periods(4 * shape[0])
        elif name.endswith('bias_mask'):
            value = torch.ones(shape)
            value[shape[0] // 3:2 * shape[0] // 3] = 0
        elif name.endswith('gamma'):  # LayerScale: large enough to matter
            value = 0.3 + 0.1 * torch.randn(shape, generator=generator)
        elif name.endswith('weight') and len(shape) > 1:
            value = torch.randn(
                shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        else:
            value = 0.1 * torch.randn(shape, generator=generator)
            if name.endswith(('norm.weight', 'norm1.weight', 'norm2.weight')):
                value += 1
        state[name] = value
    return state


def fabricate_meta_file(arch: str,
                        path,
                        depth: Optional[int] = None,
                        seed: int = 0) -> dict:
    """:func:`fabricate_meta_state` saved as Meta's plain state_dict."""
    state = fabricate_meta_state(arch, depth, seed)
    torch.save(state, path)
    return state
