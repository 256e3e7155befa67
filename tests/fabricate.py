"""Files in the layouts of Meta's releases, filled with random tensors.

Names and shapes are written out from the published architecture (FACTS)
rather than read from the project's modules, so a test that loads them
checks the project against the official layout.
"""
from collections import OrderedDict

import torch

OFFICIAL = {
    'vits14': (384, 12, 6, 'mlp'),
    'vitb14': (768, 12, 12, 'mlp'),
    'vitl14': (1024, 24, 16, 'mlp'),
    'vitg14': (1536, 40, 24, 'swiglu'),
}


def official_manifest(arch: str) -> dict:
    base, _, reg = arch.partition('_')
    dim, depth, _, ffn = OFFICIAL[base]
    shapes = {
        'cls_token': (1, 1, dim),
        'pos_embed': (1, 1 + 37 * 37, dim),
        'mask_token': (1, dim),
        'patch_embed.proj.weight': (dim, 3, 14, 14),
        'patch_embed.proj.bias': (dim, ),
        'norm.weight': (dim, ),
        'norm.bias': (dim, ),
    }
    if reg:
        shapes['register_tokens'] = (1, 4, dim)
    for i in range(depth):
        b = f'blocks.{i}.'
        shapes.update({
            b + 'norm1.weight': (dim, ),
            b + 'norm1.bias': (dim, ),
            b + 'attn.qkv.weight': (3 * dim, dim),
            b + 'attn.qkv.bias': (3 * dim, ),
            b + 'attn.proj.weight': (dim, dim),
            b + 'attn.proj.bias': (dim, ),
            b + 'ls1.gamma': (dim, ),
            b + 'norm2.weight': (dim, ),
            b + 'norm2.bias': (dim, ),
            b + 'ls2.gamma': (dim, ),
        })
        if ffn == 'mlp':
            shapes.update({
                b + 'mlp.fc1.weight': (4 * dim, dim),
                b + 'mlp.fc1.bias': (4 * dim, ),
                b + 'mlp.fc2.weight': (dim, 4 * dim),
                b + 'mlp.fc2.bias': (dim, ),
            })
        else:  # ViT-g: SwiGLU, hidden 2/3 * 4 * dim rounded up to 8 -> 4096
            hidden = 4096
            shapes.update({
                b + 'mlp.w12.weight': (2 * hidden, dim),
                b + 'mlp.w12.bias': (2 * hidden, ),
                b + 'mlp.w3.weight': (dim, hidden),
                b + 'mlp.w3.bias': (dim, ),
            })
    return shapes


def fabricate_official_file(arch, path, depth=None, seed=0):
    """Random tensors with the official names and shapes (non-trivial
    LayerScale and norms so that every parameter matters)."""
    generator = torch.Generator().manual_seed(seed)
    manifest = official_manifest(arch)
    state = {}
    for name, shape in manifest.items():
        if depth is not None and name.startswith('blocks.') and int(
                name.split('.')[1]) >= depth:
            continue
        scale = 0.02 if name.endswith('weight') and len(shape) > 1 else 0.1
        value = torch.randn(shape, generator=generator) * scale
        if name.endswith(('norm1.weight', 'norm2.weight', 'norm.weight')):
            value += 1
        state[name] = value
    torch.save(state, path)
    return state


def fabricate_head_file(path, embed_dim, levels, num_classes, seed=0):
    """An mmcv 1.x checkpoint as Meta released the linear (levels=1) and ms
    (levels=4) heads: BN + 1x1 conv under ``decode_head.``, mmcv meta and
    AdamW state."""
    generator = torch.Generator().manual_seed(seed)
    channels = embed_dim * levels
    state = OrderedDict([
        ('decode_head.conv_seg.weight',
         torch.randn(num_classes, channels, 1, 1, generator=generator) * 0.1),
        ('decode_head.conv_seg.bias',
         torch.randn(num_classes, generator=generator) * 0.1),
        ('decode_head.bn.weight',
         1 + 0.1 * torch.randn(channels, generator=generator)),
        ('decode_head.bn.bias',
         0.1 * torch.randn(channels, generator=generator)),
        ('decode_head.bn.running_mean',
         0.1 * torch.randn(channels, generator=generator)),
        ('decode_head.bn.running_var',
         0.5 + torch.rand(channels, generator=generator)),
        ('decode_head.bn.num_batches_tracked', torch.tensor(40000)),
    ])
    meta = dict(
        mmcv_version='1.5.0',
        time='Fri Apr 14 10:00:00 2023',
        env_info='sys.platform: linux',
        seed=0,
        exp_name='config.py',
        config="model = dict(type='EncoderDecoder')",
        CLASSES=tuple(f'class{i}' for i in range(num_classes)),
        PALETTE=[[i, i, i] for i in range(num_classes)],
        epoch=1,
        iter=40000,
        hook_msgs=dict(last_ckpt='work_dirs/iter_40000.pth'))
    trainable = [
        'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias',
        'decode_head.bn.weight', 'decode_head.bn.bias'
    ]
    optimizer = dict(
        state={
            i:
            dict(
                step=torch.tensor(40000.),
                exp_avg=torch.zeros_like(state[k]),
                exp_avg_sq=torch.zeros_like(state[k]))
            for i, k in enumerate(trainable)
        },
        param_groups=[
            dict(
                lr=0.0,
                betas=(0.9, 0.999),
                eps=1e-8,
                weight_decay=1e-4,
                amsgrad=False,
                params=list(range(len(trainable))))
        ])
    torch.save(dict(meta=meta, state_dict=state, optimizer=optimizer), path)
    return state
