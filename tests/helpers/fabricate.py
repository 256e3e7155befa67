"""Files in the layouts of Meta's releases, filled with random tensors, and
a small dataset in the layout and formats of the PASCAL VOC release.

Names and shapes are written out from the published architecture (FACTS)
rather than read from the project's modules, so a test that loads them
checks the project against the official layout.
"""
from collections import OrderedDict
from pathlib import Path

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


# Meta's ViT-g + ViT-Adapter + Mask2Former ADE20K model, with the settings
# of configs/ade20k_vitg14_m2f_official.py; the names below are read from
# Meta's dinov2/eval/segmentation_m2f modules (mmseg 0.x / mmcv 1.x).
META_M2F = dict(
    dim=1536,
    depth=40,
    ffn='swiglu',
    grid=37,
    stages=4,
    deform_heads=24,
    deform_points=4,
    deform_ratio=0.5,
    cffn_ratio=0.25,
    inplanes=64,
    feat=1024,
    queries=200,
    classes=150,
    encoder_layers=6,
    encoder_heads=32,
    encoder_points=4,
    encoder_ffn=4096,
    decoder_layers=9,
    decoder_ffn=4096)


def _bn(shapes: dict, prefix: str, channels: int) -> None:
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        shapes[f'{prefix}.{name}'] = (channels, )
    shapes[f'{prefix}.num_batches_tracked'] = ()


def _linear(shapes: dict, prefix: str, out: int, inp: int) -> None:
    shapes[f'{prefix}.weight'] = (out, inp)
    shapes[f'{prefix}.bias'] = (out, )


def _deform_attn(shapes, prefix, dim, heads, levels, points, value_dim):
    _linear(shapes, f'{prefix}.sampling_offsets', heads * levels * points * 2,
            dim)
    _linear(shapes, f'{prefix}.attention_weights', heads * levels * points,
            dim)
    _linear(shapes, f'{prefix}.value_proj', value_dim, dim)
    _linear(shapes, f'{prefix}.output_proj', dim, value_dim)


def meta_m2f_manifest(**overrides) -> dict:
    """Names and shapes of every tensor in Meta's
    ``dinov2_vitg14_ade20k_m2f.pth`` ``state_dict`` (mmseg 0.x names)."""
    s = dict(META_M2F, **overrides)
    dim, feat = s['dim'], s['feat']
    shapes = {
        'backbone.cls_token': (1, 1, dim),
        'backbone.pos_embed': (1, 1 + s['grid']**2, dim),
        'backbone.patch_embed.proj.weight': (dim, 3, 14, 14),
        'backbone.patch_embed.proj.bias': (dim, ),
        'backbone.level_embed': (3, dim),
    }
    for i in range(s['depth']):
        b = f'backbone.blocks.{i}.'
        for norm in ('norm1', 'norm2'):
            shapes[b + norm + '.weight'] = shapes[b + norm + '.bias'] = (dim, )
        _linear(shapes, b + 'attn.qkv', 3 * dim, dim)
        _linear(shapes, b + 'attn.proj', dim, dim)
        shapes[b + 'gamma1'] = shapes[b + 'gamma2'] = (dim, )
        if s['ffn'] == 'swiglu':
            hidden = (int(2 * 4 * dim / 3) + 7) // 8 * 8
            _linear(shapes, b + 'mlp.w1', hidden, dim)
            _linear(shapes, b + 'mlp.w2', hidden, dim)
            _linear(shapes, b + 'mlp.w3', dim, hidden)
        else:
            _linear(shapes, b + 'mlp.fc1', 4 * dim, dim)
            _linear(shapes, b + 'mlp.fc2', dim, 4 * dim)
    # Spatial prior module: conv-BN-ReLU stem (x3) + max-pool, three
    # strided conv-BN-ReLU, four 1x1 projections to the ViT width.
    planes = s['inplanes']
    convs = ((3, planes), (planes, planes), (planes, planes))
    for index, (inp, out) in zip((0, 3, 6), convs):
        shapes[f'backbone.spm.stem.{index}.weight'] = (out, inp, 3, 3)
        _bn(shapes, f'backbone.spm.stem.{index + 1}', out)
    widths = {1: planes, 2: 2 * planes, 3: 4 * planes, 4: 4 * planes}
    for level in (2, 3, 4):
        shapes[f'backbone.spm.conv{level}.0.weight'] = (widths[level],
                                                        widths[level - 1], 3,
                                                        3)
        _bn(shapes, f'backbone.spm.conv{level}.1', widths[level])
    for level in (1, 2, 3, 4):
        shapes[f'backbone.spm.fc{level}.weight'] = (dim, widths[level], 1, 1)
        shapes[f'backbone.spm.fc{level}.bias'] = (dim, )
    value_dim = int(dim * s['deform_ratio'])
    hidden = int(dim * s['cffn_ratio'])
    heads, points = s['deform_heads'], s['deform_points']

    def extractor(prefix):
        for norm in ('query_norm', 'feat_norm', 'ffn_norm'):
            shapes[f'{prefix}.{norm}.weight'] = (dim, )
            shapes[f'{prefix}.{norm}.bias'] = (dim, )
        _deform_attn(shapes, f'{prefix}.attn', dim, heads, 1, points,
                     value_dim)
        _linear(shapes, f'{prefix}.ffn.fc1', hidden, dim)
        shapes[f'{prefix}.ffn.dwconv.dwconv.weight'] = (hidden, 1, 3, 3)
        shapes[f'{prefix}.ffn.dwconv.dwconv.bias'] = (hidden, )
        _linear(shapes, f'{prefix}.ffn.fc2', dim, hidden)

    for i in range(s['stages']):
        p = f'backbone.interactions.{i}.'
        shapes[p + 'injector.gamma'] = (dim, )
        for norm in ('query_norm', 'feat_norm'):
            shapes[f'{p}injector.{norm}.weight'] = (dim, )
            shapes[f'{p}injector.{norm}.bias'] = (dim, )
        _deform_attn(shapes, p + 'injector.attn', dim, heads, 3, points,
                     value_dim)
        extractor(p + 'extractor')
        if i == s['stages'] - 1:
            extractor(p + 'extra_extractors.0')
            extractor(p + 'extra_extractors.1')
    shapes['backbone.up.weight'] = (dim, dim, 2, 2)
    shapes['backbone.up.bias'] = (dim, )
    for i in range(1, 5):
        _bn(shapes, f'backbone.norm{i}', dim)

    h = 'decode_head.'
    for i in range(3):
        shapes[f'{h}pixel_decoder.input_convs.{i}.conv.weight'] = (feat, dim,
                                                                   1, 1)
        shapes[f'{h}pixel_decoder.input_convs.{i}.conv.bias'] = (feat, )
        shapes[f'{h}pixel_decoder.input_convs.{i}.gn.weight'] = (feat, )
        shapes[f'{h}pixel_decoder.input_convs.{i}.gn.bias'] = (feat, )
    for i in range(s['encoder_layers']):
        p = f'{h}pixel_decoder.encoder.layers.{i}.'
        _deform_attn(shapes, p + 'attentions.0', feat, s['encoder_heads'], 3,
                     s['encoder_points'], feat)
        _linear(shapes, p + 'ffns.0.layers.0.0', s['encoder_ffn'], feat)
        _linear(shapes, p + 'ffns.0.layers.1', feat, s['encoder_ffn'])
        for n in range(2):
            shapes[f'{p}norms.{n}.weight'] = shapes[f'{p}norms.{n}.bias'] = (
                feat, )
    shapes[h + 'pixel_decoder.level_encoding.weight'] = (3, feat)
    shapes[h + 'pixel_decoder.lateral_convs.0.conv.weight'] = (feat, dim, 1, 1)
    shapes[h + 'pixel_decoder.output_convs.0.conv.weight'] = (feat, feat, 3, 3)
    for conv in ('lateral_convs', 'output_convs'):
        shapes[f'{h}pixel_decoder.{conv}.0.gn.weight'] = (feat, )
        shapes[f'{h}pixel_decoder.{conv}.0.gn.bias'] = (feat, )
    shapes[h + 'pixel_decoder.mask_feature.weight'] = (feat, feat, 1, 1)
    shapes[h + 'pixel_decoder.mask_feature.bias'] = (feat, )
    for i in range(s['decoder_layers']):
        p = f'{h}transformer_decoder.layers.{i}.'
        for a in range(2):
            shapes[f'{p}attentions.{a}.attn.in_proj_weight'] = (3 * feat, feat)
            shapes[f'{p}attentions.{a}.attn.in_proj_bias'] = (3 * feat, )
            _linear(shapes, f'{p}attentions.{a}.attn.out_proj', feat, feat)
        _linear(shapes, p + 'ffns.0.layers.0.0', s['decoder_ffn'], feat)
        _linear(shapes, p + 'ffns.0.layers.1', feat, s['decoder_ffn'])
        for n in range(3):
            shapes[f'{p}norms.{n}.weight'] = shapes[f'{p}norms.{n}.bias'] = (
                feat, )
    shapes[h + 'transformer_decoder.post_norm.weight'] = (feat, )
    shapes[h + 'transformer_decoder.post_norm.bias'] = (feat, )
    shapes[h + 'query_embed.weight'] = (s['queries'], feat)
    shapes[h + 'query_feat.weight'] = (s['queries'], feat)
    shapes[h + 'level_embed.weight'] = (3, feat)
    _linear(shapes, h + 'cls_embed', s['classes'] + 1, feat)
    for i in (0, 2, 4):
        _linear(shapes, f'{h}mask_embed.{i}', feat, feat)
    return shapes


def fabricate_meta_m2f_file(path, seed=0, **overrides) -> dict:
    """An mmcv 1.x checkpoint with Meta's Mask2Former names and shapes,
    random values (norm weights around 1, variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, shape in meta_m2f_manifest(**overrides).items():
        if name.endswith('num_batches_tracked'):
            state[name] = torch.tensor(80000)
            continue
        value = torch.randn(shape, generator=generator)
        if name.endswith('running_var'):
            value = 0.5 + value.abs()
        elif len(shape) > 1:
            value *= 0.02 if 'sampling_offsets' not in name else 0.5
        else:
            value *= 0.1
            if name.endswith(
                ('norm1.weight', 'norm2.weight', '.gn.weight', 'norm.weight',
                 'norms.0.weight', 'norms.1.weight', 'norms.2.weight')):
                value += 1
        state[name] = value
    classes = overrides.get('classes', META_M2F['classes'])
    meta = dict(
        mmcv_version='1.5.0', CLASSES=tuple(f'c{i}' for i in range(classes)))
    torch.save(dict(meta=meta, state_dict=state), path)
    return state


def voc_palette() -> list:
    """PASCAL VOC's 256-colour palette (the colour of index i spreads its
    bits over the high bits of R, G and B), as in its label PNGs."""
    palette = []
    for index in range(256):
        r = g = b = 0
        for shift in range(8):
            r |= ((index >> 0) & 1) << (7 - shift)
            g |= ((index >> 1) & 1) << (7 - shift)
            b |= ((index >> 2) & 1) << (7 - shift)
            index >>= 3
        palette += [r, g, b]
    return palette


def fabricate_voc_dataset(root, splits=None, size=(75, 110), seed=0) -> dict:
    """A small dataset in the VOC 2012 release's layout and formats:
    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` as palette
    ("P") PNGs whose pixel values are class indices (0 background, 1-20
    objects, 255 the void border drawn around every object) and
    ``ImageSets/Segmentation/<split>.txt``.

    Returns:
        dict: the label array of every image id.
    """
    import cv2
    import numpy as np
    from PIL import Image

    splits = splits or {'train': 3, 'val': 3}
    rng = np.random.default_rng(seed)
    root = Path(root)
    for folder in ('JPEGImages', 'SegmentationClass',
                   'ImageSets/Segmentation'):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    labels = {}
    for split, count in splits.items():
        ids = [f'2007_{split}_{i:03d}' for i in range(count)]
        for name in ids:
            label = np.zeros(size, np.uint8)
            for _ in range(2):
                cls = int(rng.integers(1, 21))
                centre = (int(rng.integers(20, size[1] - 20)),
                          int(rng.integers(20, size[0] - 20)))
                axes = (int(rng.integers(8, 18)), int(rng.integers(8, 18)))
                mask = np.zeros(size, np.uint8)
                cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
                border = cv2.dilate(mask, np.ones((5, 5), np.uint8)) - mask
                label[border.astype(bool)] = 255
                label[mask.astype(bool)] = cls
            colours = np.asarray(palette, np.uint8).reshape(256, 3)[label]
            image = np.clip(
                colours.astype(float) * 0.6 + 60 +
                rng.normal(0, 10, colours.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(
                root / 'JPEGImages' / f'{name}.jpg', quality=95)
            png = Image.fromarray(label, mode='P')
            png.putpalette(palette)
            png.save(root / 'SegmentationClass' / f'{name}.png')
            labels[name] = label
        (root / 'ImageSets' / 'Segmentation' / f'{split}.txt').write_text(
            ''.join(f'{name}\n' for name in ids))
    return labels


def eomt_manifest(dim: int = 1024,
                  depth: int = 24,
                  mlp_dim: int = 4096,
                  registers: int = 4,
                  grid: int = 32,
                  patch: int = 16,
                  num_queries: int = 100,
                  num_classes: int = 150,
                  num_blocks: int = 4,
                  num_upscale: int = 2) -> dict:
    """Names and shapes of every tensor in a checkpoint of EoMT's Lightning
    module (tue-mps/eomt: training/lightning_module.py holds ``network``,
    an ``EoMT`` from models/eomt.py, and ``criterion``). The defaults are
    its released ADE20K semantic ViT-L: timm's
    ``vit_large_patch14_reg4_dinov2`` re-created at patch 16 and 512 pixels
    (no class-token position: ``pos_embed`` covers the 32 x 32 patches),
    100 queries, 4 blocks, ``log2(16) - 2`` = 2 upscale blocks."""
    b = 'network.encoder.backbone.'
    shapes = {
        'network.encoder.pixel_mean': (1, 3, 1, 1),
        'network.encoder.pixel_std': (1, 3, 1, 1),
        b + 'cls_token': (1, 1, dim),
        b + 'pos_embed': (1, grid * grid, dim),
        b + 'patch_embed.proj.weight': (dim, 3, patch, patch),
        b + 'patch_embed.proj.bias': (dim, ),
        b + 'norm.weight': (dim, ),
        b + 'norm.bias': (dim, ),
        'network.attn_mask_probs': (num_blocks, ),
        'network.q.weight': (num_queries, dim),
        'network.class_head.weight': (num_classes + 1, dim),
        'network.class_head.bias': (num_classes + 1, ),
        'criterion.empty_weight': (num_classes + 1, ),
    }
    if registers:
        shapes[b + 'reg_token'] = (1, registers, dim)
    for i in range(depth):
        k = f'{b}blocks.{i}.'
        shapes.update({
            k + 'norm1.weight': (dim, ),
            k + 'norm1.bias': (dim, ),
            k + 'attn.qkv.weight': (3 * dim, dim),
            k + 'attn.qkv.bias': (3 * dim, ),
            k + 'attn.proj.weight': (dim, dim),
            k + 'attn.proj.bias': (dim, ),
            k + 'ls1.gamma': (dim, ),
            k + 'norm2.weight': (dim, ),
            k + 'norm2.bias': (dim, ),
            k + 'mlp.fc1.weight': (mlp_dim, dim),
            k + 'mlp.fc1.bias': (mlp_dim, ),
            k + 'mlp.fc2.weight': (dim, mlp_dim),
            k + 'mlp.fc2.bias': (dim, ),
            k + 'ls2.gamma': (dim, ),
        })
    for i in (0, 2, 4):  # Linear, GELU, Linear, GELU, Linear
        shapes[f'network.mask_head.{i}.weight'] = (dim, dim)
        shapes[f'network.mask_head.{i}.bias'] = (dim, )
    for i in range(num_upscale):  # ScaleBlock
        k = f'network.upscale.{i}.'
        shapes.update({
            k + 'conv1.weight': (dim, dim, 2, 2),  # ConvTranspose2d: in, out
            k + 'conv1.bias': (dim, ),
            k + 'conv2.weight': (dim, 1, 3, 3),  # depthwise, no bias
            k + 'norm.weight': (dim, ),  # timm's LayerNorm2d
            k + 'norm.bias': (dim, ),
        })
    return shapes


def fabricate_eomt_state(seed: int = 0, **sizes) -> dict:
    """Random tensors in EoMT's layout (:func:`eomt_manifest`), with
    ImageNet pixel statistics, EoMT's class weights (1, no object 0.1) and
    annealed masking probabilities (0), as a finished training leaves
    them."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in eomt_manifest(**sizes).items():
        fan_in = shape[1] if len(shape) > 1 else 1
        value = torch.randn(shape, generator=generator)
        if len(shape) > 1 and 'token' not in name and 'pos_embed' not in name:
            value /= fan_in**0.5
        else:
            value *= 0.1
        if name.endswith(('norm1.weight', 'norm2.weight', 'norm.weight')):
            value += 1
        state[name] = value
    state['network.encoder.pixel_mean'] = torch.tensor([0.485, 0.456, 0.406
                                                        ]).reshape(1, 3, 1, 1)
    state['network.encoder.pixel_std'] = torch.tensor([0.229, 0.224, 0.225
                                                       ]).reshape(1, 3, 1, 1)
    weights = torch.ones_like(state['criterion.empty_weight'])
    weights[-1] = 0.1
    state['criterion.empty_weight'] = weights
    state['network.attn_mask_probs'].zero_()
    return state
