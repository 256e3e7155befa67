"""Meta's released DINOv3 Mask2Former (ViT-7B/16 + DINOv3 adapter +
Mask2Former, ``dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth``) through
configs/dinov3/ade20k_vit7b16_m2f_official.py: the head file in Meta's
names loads strictly (a reduced model, and the full 7B key/shape manifest
on the meta device), bad pairings are refused naming both sides, the
config carries Meta's test, and the numbers match an independent
plain-torch reference of Meta's modules."""
import copy
import math
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
from helpers.archs import TINY_SWIGLU_ARCH
from helpers.dinov3_meta import fabricate_meta_file, meta_manifest
from helpers.tools import REPO
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from dinov2_seg.apis.inference import init_segmentor
from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.catalog import GATED_HEAD_FILES, gated_message
from dinov2_seg.checkpoints.meta_dinov3_m2f import convert_meta_dinov3_m2f
from dinov2_seg.models.backbones.dinov3_adapter import meta_interaction_indexes

CFG_7B = str(REPO / 'configs' / 'dinov3' / 'ade20k_vit7b16_m2f_official.py')
CFG_L = str(REPO / 'configs' / 'dinov3' / 'ade20k_vitl16_m2f_official.py')
HEAD_FILE = 'dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth'
BACKBONE_FILE = 'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth'
Shape = Tuple[int, ...]

# ---------------------------------------------------------------------------
# Meta's head file, written out from Meta's module definitions
# (dinov3/eval/segmentation/models at 6876159), not from the package.


def meta_head_manifest(dim: int,
                       hidden: int,
                       classes: int,
                       queries: int,
                       ffn: int,
                       heads: int = 16,
                       enc_layers: int = 6,
                       dec_layers: int = 9,
                       inplane: int = 64,
                       deform_heads: int = 16,
                       points: int = 4) -> Dict[str, Shape]:
    """Every tensor of Meta's M2F head file (``FeatureDecoder`` state less
    ``segmentation_model.0.backbone.*``) with its shape."""
    shapes: Dict[str, Shape] = {}

    def add(prefix, weight, bias=True):
        shapes[prefix + '.weight'] = weight
        if bias:
            shapes[prefix + '.bias'] = (weight[0], )

    def norm(prefix, channels):
        shapes[prefix + '.weight'] = shapes[prefix + '.bias'] = (channels, )

    def batch_norm(prefix, channels):  # (Sync)BatchNorm2d
        norm(prefix, channels)
        shapes[prefix + '.running_mean'] = (channels, )
        shapes[prefix + '.running_var'] = (channels, )
        shapes[prefix + '.num_batches_tracked'] = ()

    a = 'segmentation_model.0.'
    shapes[a + 'level_embed'] = (3, dim)
    # SpatialPriorModule: conv (no bias) + SyncBN + ReLU blocks, as
    # (conv, norm, out channels, in channels) in multiples of inplane.
    stem = [('stem.0', 'stem.1', 1, 0), ('stem.3', 'stem.4', 1, 1),
            ('stem.6', 'stem.7', 1, 1), ('conv2.0', 'conv2.1', 2, 1),
            ('conv3.0', 'conv3.1', 4, 2), ('conv4.0', 'conv4.1', 4, 4)]
    for conv, bn, out, inp in stem:
        inp = inp * inplane or 3  # the image
        add(a + 'spm.' + conv, (out * inplane, inp, 3, 3), bias=False)
        batch_norm(a + 'spm.' + bn, out * inplane)
    for i, inp in enumerate((inplane, 2 * inplane, 4 * inplane, 4 * inplane)):
        add(a + f'spm.fc{i + 1}', (dim, inp, 1, 1))
    value, cffn = int(dim * 0.5), int(dim * 0.25)

    def extractor(p):  # Extractor: MSDeformAttn over 1 level + ConvFFN
        norm(p + 'query_norm', dim)
        norm(p + 'feat_norm', dim)
        add(p + 'attn.sampling_offsets', (deform_heads * points * 2, dim))
        add(p + 'attn.attention_weights', (deform_heads * points, dim))
        add(p + 'attn.value_proj', (value, dim))
        add(p + 'attn.output_proj', (dim, value))
        add(p + 'ffn.fc1', (cffn, dim))
        add(p + 'ffn.dwconv.dwconv', (cffn, 1, 3, 3))
        add(p + 'ffn.fc2', (dim, cffn))
        norm(p + 'ffn_norm', dim)

    for i in range(4):
        extractor(a + f'interactions.{i}.extractor.')
    for j in range(2):
        extractor(a + f'interactions.3.extra_extractors.{j}.')
    add(a + 'up', (dim, dim, 2, 2))
    for i in range(1, 5):
        batch_norm(a + f'norm{i}', dim)

    p = 'segmentation_model.1.pixel_decoder.'
    for i in range(3):
        add(p + f'input_convs.{i}.0', (hidden, dim, 1, 1))
        norm(p + f'input_convs.{i}.1', hidden)  # GroupNorm(32)
    shapes[p + 'encoder.level_encoding'] = (3, hidden)
    for i in range(enc_layers):
        e = p + f'encoder.encoder.layers.{i}.'
        add(e + 'self_attn.sampling_offsets', (heads * 3 * points * 2, hidden))
        add(e + 'self_attn.attention_weights', (heads * 3 * points, hidden))
        add(e + 'self_attn.value_proj', (hidden, hidden))
        add(e + 'self_attn.output_proj', (hidden, hidden))
        norm(e + 'norm1', hidden)
        add(e + 'linear1', (ffn, hidden))
        add(e + 'linear2', (hidden, ffn))
        norm(e + 'norm2', hidden)
    add(p + 'mask_feature', (hidden, hidden, 1, 1))
    add(p + 'lateral_convs.0', (hidden, dim, 1, 1), bias=False)
    norm(p + 'lateral_convs.0.norm', hidden)
    add(p + 'output_convs.0', (hidden, hidden, 3, 3), bias=False)
    norm(p + 'output_convs.0.norm', hidden)

    d = 'segmentation_model.1.predictor.'
    for i in range(dec_layers):
        for layer, attn in (('self_attention', 'self_attn'),
                            ('cross_attention', 'multihead_attn')):
            m = d + f'transformer_{layer}_layers.{i}.'
            shapes[m + attn + '.in_proj_weight'] = (3 * hidden, hidden)
            shapes[m + attn + '.in_proj_bias'] = (3 * hidden, )
            add(m + attn + '.out_proj', (hidden, hidden))
            norm(m + 'norm', hidden)
        f = d + f'transformer_ffn_layers.{i}.'
        add(f + 'linear1', (ffn, hidden))
        add(f + 'linear2', (hidden, ffn))
        norm(f + 'norm', hidden)
    norm(d + 'post_norm', hidden)
    shapes[d + 'query_feat.weight'] = (queries, hidden)
    shapes[d + 'query_embed.weight'] = (queries, hidden)
    shapes[d + 'level_embed.weight'] = (3, hidden)
    add(d + 'class_embed', (classes + 1, hidden))
    for i in range(3):
        add(d + f'mask_embed.layers.{i}', (hidden, hidden))
    return shapes


def fabricate_head(manifest: Dict[str, Shape], seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in manifest.items():
        if name.endswith('num_batches_tracked'):
            state[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            state[name] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) > 1:
            state[name] = torch.randn(
                shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        else:
            state[name] = 0.1 * torch.randn(shape, generator=generator)
    return state


# ---------------------------------------------------------------------------
# The official config shrunk to a CPU test: ViT-S/16 width, 4 blocks,
# hidden 64 (GroupNorm(32) needs a multiple of 32), 16 heads as Meta's.

SMALL = dict(
    dim=384, depth=4, vit_heads=6, hidden=64, ffn=128, queries=10, classes=5)

_ENC = 'model.decode_head.pixel_decoder.encoder.layer_cfg.'
_DEC = 'model.decode_head.transformer_decoder.layer_cfg.'


def small_options(dim: int = SMALL['dim'],
                  depth: int = SMALL['depth'],
                  vit_heads: int = SMALL['vit_heads'],
                  hidden: int = SMALL['hidden'],
                  ffn: int = SMALL['ffn'],
                  queries: int = SMALL['queries'],
                  classes: int = SMALL['classes']) -> dict:
    """--cfg-options shrinking the official config to a CPU model (layer
    counts, heads, points and Meta's other settings unchanged)."""
    return {
        'model.backbone.arch':
        dict(_delete_=True, embed_dim=dim, depth=depth, num_heads=vit_heads),
        'model.decode_head.in_channels': [dim] * 4,
        'model.decode_head.feat_channels':
        hidden,
        'model.decode_head.out_channels':
        hidden,
        'model.decode_head.num_queries':
        queries,
        'model.decode_head.num_classes':
        classes,
        _ENC + 'self_attn_cfg.embed_dims':
        hidden,
        _ENC + 'ffn_cfg.embed_dims':
        hidden,
        _ENC + 'ffn_cfg.feedforward_channels':
        ffn,
        'model.decode_head.pixel_decoder.positional_encoding.num_feats':
        hidden // 2,
        'model.decode_head.positional_encoding.num_feats':
        hidden // 2,
        _DEC + 'self_attn_cfg.embed_dims':
        hidden,
        _DEC + 'cross_attn_cfg.embed_dims':
        hidden,
        _DEC + 'ffn_cfg.embed_dims':
        hidden,
        _DEC + 'ffn_cfg.feedforward_channels':
        ffn,
    }


def small_config(backbone_file=None, **sizes) -> Config:
    cfg = Config.fromfile(CFG_7B)
    cfg.merge_from_dict(small_options(**sizes))
    cfg.model.backbone.init_cfg = None if backbone_file is None else dict(
        type='Pretrained', checkpoint=str(backbone_file))
    return cfg


def build(cfg: Config):
    init_default_scope('mmseg')
    return MODELS.build(copy.deepcopy(cfg.model))


def fabricate_small_files(folder: Path) -> tuple:
    """The two files of the reduced model under the released names (the
    config's backbone file and Meta's head file) in ``folder``: a 4-block
    ViT-S/16-wide DINOv3 backbone and a head of SMALL's sizes, both in
    Meta's layouts."""
    backbone_file = folder / BACKBONE_FILE
    backbone = fabricate_meta_file(
        'vits16', backbone_file, depth=SMALL['depth'])
    head = fabricate_head(
        meta_head_manifest(SMALL['dim'], SMALL['hidden'], SMALL['classes'],
                           SMALL['queries'], SMALL['ffn']))
    head_file = folder / HEAD_FILE
    torch.save(head, head_file)  # a plain state_dict, as Meta's
    return backbone_file, backbone, head_file, head


@pytest.fixture(scope='module')
def small_files(tmp_path_factory):
    return fabricate_small_files(tmp_path_factory.mktemp('dinov3_m2f'))


@pytest.fixture(scope='module')
def loaded(small_files):
    """The reduced official model from the two files, as tools/test.py and
    the Python API load it (the head file strictly, the ViT from the
    backbone file)."""
    backbone_file, _, head_file, _ = small_files
    return init_segmentor(
        small_config(), str(head_file), backbone=str(backbone_file))


def test_small_head_file_loads_strictly_with_every_tensor_placed(
        small_files, loaded):
    _, backbone, head_file, head = small_files
    ours = loaded.state_dict()
    converted = convert_meta_dinov3_m2f(head)
    assert len(converted) == len(head)
    vit = {k for k in ours if k.startswith('backbone.vit.')}
    assert set(converted) | vit == set(ours)
    for key, value in converted.items():
        assert torch.equal(ours[key], value), key
    for key, value in backbone.items():
        assert torch.equal(ours['backbone.vit.' + key], value), key
    # A few names pinned by hand: mmcv lists vs detectron2's names.
    pairs = {
        'segmentation_model.1.predictor.mask_embed.layers.1.weight':
        'decode_head.mask_embed.2.weight',
        'segmentation_model.1.predictor.transformer_ffn_layers.3.norm.bias':
        'decode_head.transformer_decoder.layers.3.norms.2.bias',
        'segmentation_model.1.predictor.transformer_cross_attention_layers.'
        '8.multihead_attn.in_proj_weight':
        'decode_head.transformer_decoder.layers.8.cross_attn.attn.'
        'in_proj_weight',
        'segmentation_model.1.pixel_decoder.encoder.level_encoding':
        'decode_head.pixel_decoder.level_encoding.weight',
        'segmentation_model.1.pixel_decoder.encoder.encoder.layers.5.'
        'linear2.weight':
        'decode_head.pixel_decoder.encoder.layers.5.ffn.layers.1.weight',
        'segmentation_model.1.pixel_decoder.lateral_convs.0.norm.weight':
        'decode_head.pixel_decoder.lateral_convs.0.gn.weight',
        'segmentation_model.0.interactions.3.extra_extractors.1.ffn.dwconv.'
        'dwconv.weight':
        'backbone.interactions.3.extra_extractors.1.ffn.dwconv.dwconv.'
        'weight',
    }
    for meta_key, our_key in pairs.items():
        assert torch.equal(ours[our_key], head[meta_key]), meta_key
    # Meta's own training checkpoints hold the same names under 'model'.
    shifted = dict(head)
    shifted['segmentation_model.0.level_embed'] = head[
        'segmentation_model.0.level_embed'] + 1
    wrapped = head_file.parent / 'model_final.pth'
    torch.save({'model': shifted}, wrapped)
    try:
        load_segmentor_checkpoint(loaded, str(wrapped))
        assert torch.equal(loaded.backbone.level_embed,
                           shifted['segmentation_model.0.level_embed'])
    finally:
        load_segmentor_checkpoint(loaded, str(head_file))


def test_loaded_model_predicts_and_its_vit_stays_frozen(loaded):
    with torch.no_grad():
        logits = loaded.predict(torch.randn(1, 3, 64, 96))[0].seg_logits.data
    assert logits.shape == (SMALL['classes'], 64, 96)
    # Class-weighted mask probabilities: non-negative, at most one per
    # query summed over the classes.
    assert 0 <= logits.min()
    assert logits.sum(0).max() <= SMALL['queries']
    backbone = loaded.backbone
    assert backbone.vit.out_indices == (0, 1, 2, 3)
    assert not any(p.requires_grad for p in backbone.vit.parameters())
    assert backbone.level_embed.requires_grad
    with pytest.raises(ValueError, match='multiples of 32, got 64x80'):
        loaded.backbone(torch.randn(1, 3, 64, 80))
    try:
        loaded.train()
        # The ViT never trains (no RoPE augmentation, no drop path); the
        # adapter does.
        assert not backbone.vit.training and backbone.vit.frozen
        assert backbone.spm.training and backbone.norm1.training
    finally:
        loaded.eval()


def test_meta_interaction_indexes():
    assert meta_interaction_indexes(40) == [9, 19, 29, 39]
    assert meta_interaction_indexes(24) == [4, 11, 17, 23]
    assert meta_interaction_indexes(12) == [2, 5, 8, 11]


# ---------------------------------------------------------------------------
# (b) the full 7B model against the manifest of Meta's 7B head file


def test_7b_config_matches_metas_released_file_key_for_key():
    cfg = Config.fromfile(CFG_7B)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Meta's hub: hidden 2048, FFN 4096, 100 queries, 150 classes, on the
    # 7B's width 4096 (dinov3/hub/segmentors.py, Mask2FormerHead).
    manifest = meta_head_manifest(
        dim=4096, hidden=2048, classes=150, queries=100, ffn=4096)
    converted = convert_meta_dinov3_m2f({
        k: torch.empty(s, device='meta')
        for k, s in manifest.items()
    })
    converted = {k: tuple(v.shape) for k, v in converted.items()}
    vit = {k: s for k, s in ours.items() if k.startswith('backbone.vit.')}
    assert {k: s for k, s in ours.items() if k not in vit} == converted
    # ...and the ViT is exactly Meta's 7B backbone file.
    assert vit == {
        'backbone.vit.' + k: s
        for k, s in meta_manifest('vit7b16').items()
    }
    assert model.backbone.interaction_indexes == [9, 19, 29, 39]
    # adapter 187 + pixel decoder 117 + decoder 175 tensors
    assert len(manifest) == len(converted) == 479


def test_vitl16_config_reads_the_papers_blocks():
    cfg = Config.fromfile(CFG_L)
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.backbone.interaction_indexes == [4, 11, 17, 23]
    expected = meta_head_manifest(
        dim=1024, hidden=2048, classes=150, queries=100, ffn=4096)
    converted = convert_meta_dinov3_m2f({
        k: torch.empty(s, device='meta')
        for k, s in expected.items()
    })
    ours = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith('backbone.vit.')
    }
    assert ours == {k: tuple(v.shape) for k, v in converted.items()}


# ---------------------------------------------------------------------------
# (c) bad input


def test_dinov2_adapter_config_refuses_the_dinov3_head_file(small_files):
    cfg = Config.fromfile(
        str(REPO / 'configs' / 'ade20k_vitg14_m2f_official.py'))
    cfg.model.backbone.arch = TINY_SWIGLU_ARCH  # 64 wide
    cfg.model.backbone.img_size = 56
    cfg.model.backbone.interaction_indexes = [[0, 0], [1, 1], [2, 2], [3, 3]]
    cfg.model.backbone.deform_num_heads = 2
    cfg.model.decode_head.in_channels = [64] * 4
    model = build(cfg)
    with pytest.raises(
            ValueError,
            match=r"(?s)m2f_head-bf307cb1.pth is Meta's DINOv3 Mask2Former "
            r'head file, made for DINOv3\'s adapter on a ViT of width 384 '
            r"\(vits16 / vits16plus\), but model.backbone is "
            r"DinoViTAdapter\(arch='custom', width 64\).*"
            r'ade20k_vit7b16_m2f_official.py'):
        load_segmentor_checkpoint(model, str(small_files[2]))


def test_dinov3_backbone_of_another_width_is_refused(small_files):
    model = build(small_config(dim=192, vit_heads=3))
    with pytest.raises(
            ValueError,
            match=r"(?s)width 384 \(vits16 / vits16plus\), but the "
            r"config's backbone is DinoV3Adapter\(arch='custom', width "
            r'192\).*ade20k_vit7b16_m2f_official.py'):
        load_segmentor_checkpoint(model, str(small_files[2]))


def test_backbone_file_of_another_width_is_refused_naming_both(small_files):
    # The config's ViT is 192 wide, the backbone file 384.
    model = build(small_config(small_files[0], dim=192, vit_heads=3))
    with pytest.raises(
            ValueError,
            match=r'(?s)a955f4ea.pth does not fit '
            r"DinoV3VisionTransformer\(arch='custom'\).*"
            r'file has \(384,.*expects \(192,.*DinoV3Adapter'
            r"\(arch='custom'\) reads a DINOv3 ViT of width 192"):
        model.backbone.init_weights()


def test_dinov2_backbone_file_is_refused(tmp_path):
    from helpers.fabricate import fabricate_official_file
    dinov2 = tmp_path / 'dinov2_vits14_pretrain.pth'
    fabricate_official_file('vits14', dinov2, depth=4)
    model = build(small_config(dinov2, dim=192, vit_heads=3))
    with pytest.raises(
            ValueError,
            match=r'(?s)dinov2_vits14_pretrain.pth does not fit.*DINOv2 '
            r'weights.*reads a DINOv3 ViT of width 192'):
        model.backbone.init_weights()


def test_unknown_tensor_and_dinov2_m2f_file_are_refused(
        small_files, loaded, tmp_path):
    head = dict(small_files[3])
    head['segmentation_model.1.predictor.input_proj.0.weight'] = \
        torch.zeros(1)
    bad = tmp_path / 'extra.pth'
    torch.save(head, bad)
    with pytest.raises(
            ValueError,
            match=r"extra.pth: tensor 'segmentation_model.1.predictor."
            r"input_proj.0.weight' is not part of Meta's DINOv3 "
            'Mask2Former layout'):
        load_segmentor_checkpoint(loaded, str(bad))
    dinov2_m2f = tmp_path / 'dinov2_vitg14_ade20k_m2f.pth'
    torch.save(
        {
            'state_dict': {
                'backbone.blocks.0.gamma1':
                torch.zeros(4),
                'decode_head.transformer_decoder.layers.0.attentions.0.'
                'attn.in_proj_weight':
                torch.zeros(3, 1)
            }
        }, dinov2_m2f)
    with pytest.raises(
            ValueError,
            match=r"(?s)DINOv2 ViT-g Mask2Former.*DinoV3Adapter.*"
            r'ade20k_vitg14_m2f_official.py'):
        load_segmentor_checkpoint(loaded, str(dinov2_m2f))


def test_head_file_is_listed_as_gated():
    entry = GATED_HEAD_FILES[HEAD_FILE]
    assert entry.arch == 'vit7b16' and entry.licence == 'DINOv3 License'
    assert entry.config == 'configs/dinov3/ade20k_vit7b16_m2f_official.py'
    assert 'this tool does not download it' in gated_message(HEAD_FILE)


# ---------------------------------------------------------------------------
# (d) Meta's test settings (config-ade20k-m2f-inference.yaml, transforms.py,
# inference.py)


def meta_short_side_resize(height: int, width: int,
                           side: int) -> Tuple[int, int]:
    """FixedSideResize._resize: the short side to ``side``, the other
    int(side * long / short + 0.5)."""
    if height > width:
        return int(side * height / width + 0.5), side
    return side, int(side * width / height + 0.5)


def test_config_carries_metas_test():
    cfg = Config.fromfile(CFG_7B)
    test_cfg = cfg.model.test_cfg
    assert test_cfg.mode == 'slide'
    assert tuple(test_cfg.crop_size) == (896, 896)
    assert tuple(test_cfg.stride) == (596, 596)
    assert test_cfg.window_rule == 'stride_square'
    assert cfg.model.decode_head.combine_at == 'window'
    assert cfg.model.backbone.type == 'DinoV3Adapter'
    assert cfg.model.backbone.init_cfg.checkpoint.endswith(
        'dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth')
    # Meta: int(896 * r), rounded up to a multiple of 32 below ratio 1.
    sides = [
        int(math.ceil(int(896 * r) / 32)) * 32 if r < 1 else int(896 * r)
        for r in (0.9, 0.95, 1.0, 1.05, 1.1)
    ]
    assert sides == [832, 864, 896, 940, 985]
    resize_stage, flip_stage = cfg.tta_pipeline[1].transforms[:2]
    assert [t.scale[1] for t in resize_stage] == sides
    assert all(t.backend == 'pillow' and t.interpolation == 'bilinear'
               for t in resize_stage)
    assert [(t.prob, t.direction) for t in flip_stage] == [(0.0, 'horizontal'),
                                                           (1.0, 'horizontal')]
    init_default_scope('mmseg')
    import dinov2_seg.datasets  # noqa: F401  (registers the transforms)
    resize = Compose(cfg.test_pipeline[1:2])
    for height, width in ((512, 683), (683, 512), (375, 500), (896, 896),
                          (1200, 1601)):
        import numpy as np
        image = np.zeros((height, width, 3), np.uint8)
        out = resize(dict(img=image, img_shape=(height, width)))
        assert out['img'].shape[:2] == meta_short_side_resize(
            height, width, 896), (height, width)


def meta_slide_windows(height: int, width: int, crop: int,
                       stride: int) -> list:
    """The (y1, y2, x1, x2) windows of Meta's slide_inference."""
    h_crop = w_crop = crop
    if h_crop > height and w_crop > width:
        h_crop = w_crop = min(height, width)
    h_grids = max(height - h_crop + stride - 1, 0) // stride + 1
    w_grids = max(width - w_crop + stride - 1, 0) // stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * stride + h_crop, height)
            x2 = min(w_idx * stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


@pytest.mark.parametrize('size', [(832, 877), (877, 832), (832, 832),
                                  (832, 1200), (940, 1253), (864, 895)])
def test_windows_are_placed_as_metas(size):
    from dinov2_seg.models.segmentors.window_merge import (axis_band_cache,
                                                           merge_slide_windows)
    height, width = size
    image = torch.arange(
        height * width, dtype=torch.float32).reshape(1, height, width)
    seen = []

    def crop_logits(crops, metas):
        for crop in crops:  # where the window was cut from
            y1, x1 = divmod(int(crop[0, 0, 0]), width)
            seen.append((y1, y1 + crop.shape[1], x1, x1 + crop.shape[2]))
        return torch.zeros(len(crops), 1, *crops.shape[2:])

    merge_slide_windows([(image, dict(ori_shape=size))], (896, 896),
                        (596, 596), 'stride_square', 4, crop_logits,
                        axis_band_cache(), False)
    assert sorted(seen) == sorted(meta_slide_windows(height, width, 896, 596))


def test_an_unknown_window_rule_lists_the_known_ones():
    from dinov2_seg.models.segmentors.window_merge import slide_window_grid
    with pytest.raises(
            ValueError, match="window_rule='square'.*'stride_square'"):
        slide_window_grid(100, 100, (50, 50), (25, 25), 'square')


def test_window_combination_is_metas_order(loaded):
    """combine_at='window' (Meta's DINOv3, inference.py: predict with
    rescale_to=window, then the sum): mask logits resized to the window,
    then sigmoid and the class-weighted sum; 'mask' (DINOv2's) combines at
    stride 4 and resizes the result."""
    import torch.nn.functional as F
    head = loaded.decode_head
    features = tuple(
        torch.randn(1, SMALL['dim'], 64 // s, 96 // s) for s in (4, 8, 16, 32))
    metas = [dict(img_shape=(64, 96), ori_shape=(64, 96))]
    with torch.no_grad():
        cls_scores, mask_preds = head(features, [])
        probs = cls_scores[-1].softmax(-1)[..., :-1]
        masks = F.interpolate(
            mask_preds[-1], (64, 96), mode='bilinear', align_corners=False)
        expected = torch.einsum('bqc,bqhw->bchw', probs, masks.sigmoid())
        window = head.predict(features, metas, dict(mode='slide'))
        head.combine_at = 'mask'
        try:
            at_mask = head.predict(features, metas, dict(mode='slide'))
        finally:
            head.combine_at = 'window'
    torch.testing.assert_close(window, expected, rtol=1e-5, atol=1e-6)
    stride4 = torch.einsum('bqc,bqhw->bchw', probs, mask_preds[-1].sigmoid())
    torch.testing.assert_close(
        at_mask,
        F.interpolate(stride4, (64, 96), mode='bilinear', align_corners=False),
        rtol=1e-5,
        atol=1e-6)


# ---------------------------------------------------------------------------
# Numbers: the model built from the config vs an independent plain-torch
# reference of Meta's modules (tests/helpers/dinov3_m2f_reference.py).


def test_numbers_match_the_reference_of_metas_modules(tmp_path):
    from helpers.dinov3_m2f_reference import (MetaDinoV3M2FReference,
                                              fabricate_meta_backbone,
                                              fabricate_meta_m2f_head)
    sizes = dict(
        hidden_dim=64,
        num_queries=10,
        num_heads=16,
        ffn_dim=128,
        num_classes=5)
    arch = dict(embed_dim=192, depth=4, num_heads=3)
    generator = torch.Generator().manual_seed(0)
    backbone = fabricate_meta_backbone(arch['embed_dim'], arch['depth'],
                                       arch['num_heads'], generator)
    head = fabricate_meta_m2f_head(
        arch['embed_dim'], arch['depth'], generator=generator, **sizes)
    torch.save(backbone, tmp_path / 'backbone.pth')
    torch.save(head, tmp_path / 'head.pth')
    reference = MetaDinoV3M2FReference(backbone, arch, head, **sizes)

    cfg = small_config(
        tmp_path / 'backbone.pth',
        dim=arch['embed_dim'],
        vit_heads=arch['num_heads'],
        hidden=sizes['hidden_dim'],
        ffn=sizes['ffn_dim'],
        queries=sizes['num_queries'],
        classes=sizes['num_classes'])
    model = build(cfg)
    load_segmentor_checkpoint(model, str(tmp_path / 'head.pth'))
    model.eval()
    image = torch.randn(1, 3, 64, 96, generator=generator)
    with torch.no_grad():
        pyramid = model.backbone(image)
        cls_scores, mask_preds = model.decode_head(pyramid, [])
        semantic = model.decode_head.predict(pyramid,
                                             [dict(img_shape=(64, 96))],
                                             dict(mode='slide'))
    expected_pyramid = reference.adapter_features(image)
    for level, ours in zip('1234', pyramid):
        torch.testing.assert_close(
            ours, expected_pyramid[level], rtol=1e-4, atol=1e-4)
    logits, masks = reference(image)
    torch.testing.assert_close(cls_scores[-1], logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mask_preds[-1], masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        semantic, reference.semantic(image, (64, 96)), rtol=1e-4, atol=1e-5)
    # The reference's numbers are not degenerate: classes and masks vary.
    assert logits.std() > 0.1 and masks.std() > 0.1


def test_tta_follows_metas_evaluation():
    """`--tta` against Meta's eval.py / inference.py written out: each
    view (short-side PIL resizes, then the horizontal flips) slid in
    windows whose probabilities are averaged, resized to the original
    image, un-flipped, softmaxed and averaged over the views. The windows'
    network is the package's (checked against the reference above);
    what is checked here is everything around it, at windows of 96,
    stride 64, so that the 64 side gets Meta's square windows."""
    import numpy as np
    import torch.nn.functional as F
    from mmengine.dataset import pseudo_collate
    from PIL import Image

    from dinov2_seg.datasets.pipelines import inference_inputs

    # A cheaper network (random weights) than the released layer counts:
    # only the orchestration around it is under test.
    sides, crop, stride = [64, 96, 105], 96, 64
    cfg = small_config(dim=192, vit_heads=3, queries=5)
    cfg.merge_from_dict({
        'model.decode_head.pixel_decoder.encoder.num_layers': 1,
        'model.decode_head.transformer_decoder.num_layers': 1
    })
    cfg.model.test_cfg.crop_size = (crop, crop)
    cfg.model.test_cfg.stride = (stride, stride)
    cfg.tta_pipeline[1].transforms[0] = [
        dict(type='Resize', scale=(1_000_000, side), **cfg.pil_resize)
        for side in sides
    ]
    with pytest.warns(UserWarning, match='randomly initialised'):
        model = init_segmentor(cfg, scales=len(sides))
    rng = np.random.default_rng(0)
    height, width = 40, 50
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with torch.no_grad():
        sample = model.test_step(
            pseudo_collate([inference_inputs(model.pipeline, bgr)]))[0]
    ours = sample.seg_logits.data

    network = model.module

    def window_probabilities(window: torch.Tensor) -> torch.Tensor:
        features = network.backbone(window)
        return network.decode_head.predict(
            features, [dict(img_shape=tuple(window.shape[2:]))],
            dict(mode='slide'))

    image = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    views = [
        image.resize(
            meta_short_side_resize(height, width, side)[::-1], Image.BILINEAR)
        for side in sides
    ]
    views += [view.transpose(Image.FLIP_LEFT_RIGHT) for view in views]
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    total = 0
    with torch.no_grad():
        for index, view in enumerate(views):
            x = torch.from_numpy(np.asarray(view).copy()).permute(
                2, 0, 1)[None].float()
            x = (x - mean) / std
            h, w = x.shape[2:]
            preds = torch.zeros(1, SMALL['classes'], h, w)
            count = torch.zeros(1, 1, h, w)
            for y1, y2, x1, x2 in meta_slide_windows(h, w, crop, stride):
                preds[:, :, y1:y2,
                      x1:x2] += window_probabilities(x[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
            pred = F.interpolate(
                preds / count, (height, width),
                mode='bilinear',
                align_corners=False)
            if index >= len(sides):
                pred = pred.flip(-1)
            total = total + pred.softmax(1)
    expected = (total / len(views))[0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
