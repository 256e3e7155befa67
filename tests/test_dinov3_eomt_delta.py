"""EoMT's released DINOv3 models as published: a delta file (fabricated here
in EoMT's layout, written from tue-mps/eomt's models/eomt.py, models/vit.py
and transformers' DINOv3ViTModel) added to Meta's DINOv3 backbone file
(tests/helpers/dinov3_meta.py), through load_segmentor_checkpoint,
init_segmentor and tools/test.py with
configs/dinov3/ade20k_vitl16_eomt_official.py; the sums are checked against
base + delta computed here, the errors by what they name."""
import re

import pytest
import torch
from helpers.dinov3_meta import fabricate_meta_file, fabricate_meta_state
from helpers.eomt import images
from helpers.modules import require
from helpers.tools import REPO
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.eomt import is_eomt_layout
from dinov2_seg.checkpoints.eomt_delta import (apply_eomt_deltas,
                                               load_eomt_deltas)

OFFICIAL = 'dinov3/ade20k_vitl16_eomt_official'
B = 'network.encoder.backbone.'
# A reduced ViT-S/16: Meta's layout at 2 blocks; 6 queries in both.
DEPTH, QUERIES, BLOCKS, CLASSES = 2, 6, 2, 150
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def eomt_delta_shapes(dim=384,
                      depth=DEPTH,
                      hidden=1536,
                      swiglu=False,
                      num_queries=QUERIES,
                      num_classes=CLASSES,
                      num_blocks=BLOCKS) -> dict:
    """Every tensor of EoMT's Lightning module on a DINOv3 ViT: transformers'
    DINOv3ViTModel (embeddings, layer.N, norm; the rope inv_freq buffer is
    not persistent) as models/vit.py rearranges it (embeddings ->
    patch_embed without the mask token, layer -> blocks), the wrapper's
    pixel statistics, and models/eomt.py's queries, class head, mask MLP,
    two ScaleBlocks (patch 16) and masking probabilities."""
    shapes = {
        'network.encoder.pixel_mean': (1, 3, 1, 1),
        'network.encoder.pixel_std': (1, 3, 1, 1),
        B + 'patch_embed.cls_token': (1, 1, dim),
        B + 'patch_embed.register_tokens': (1, 4, dim),
        B + 'patch_embed.patch_embeddings.weight': (dim, 3, 16, 16),
        B + 'patch_embed.patch_embeddings.bias': (dim, ),
        B + 'norm.weight': (dim, ),
        B + 'norm.bias': (dim, ),
        'network.attn_mask_probs': (num_blocks, ),
        'network.q.weight': (num_queries, dim),
        'network.class_head.weight': (num_classes + 1, dim),
        'network.class_head.bias': (num_classes + 1, ),
    }
    for i in range(depth):
        k = f'{B}blocks.{i}.'
        shapes.update({
            k + 'norm1.weight': (dim, ),
            k + 'norm1.bias': (dim, ),
            k + 'attention.q_proj.weight': (dim, dim),
            k + 'attention.q_proj.bias': (dim, ),
            k + 'attention.k_proj.weight': (dim, dim),  # key_bias=False
            k + 'attention.v_proj.weight': (dim, dim),
            k + 'attention.v_proj.bias': (dim, ),
            k + 'attention.o_proj.weight': (dim, dim),
            k + 'attention.o_proj.bias': (dim, ),
            k + 'layer_scale1.lambda1': (dim, ),
            k + 'norm2.weight': (dim, ),
            k + 'norm2.bias': (dim, ),
            k + 'layer_scale2.lambda1': (dim, ),
            k + 'mlp.up_proj.weight': (hidden, dim),
            k + 'mlp.up_proj.bias': (hidden, ),
            k + 'mlp.down_proj.weight': (dim, hidden),
            k + 'mlp.down_proj.bias': (dim, ),
        })
        if swiglu:
            shapes[k + 'mlp.gate_proj.weight'] = (hidden, dim)
            shapes[k + 'mlp.gate_proj.bias'] = (hidden, )
    for i in (0, 2, 4):
        shapes[f'network.mask_head.{i}.weight'] = (dim, dim)
        shapes[f'network.mask_head.{i}.bias'] = (dim, )
    for i in range(2):
        u = f'network.upscale.{i}.'
        shapes.update({
            u + 'conv1.weight': (dim, dim, 2, 2),  # ConvTranspose2d
            u + 'conv1.bias': (dim, ),
            u + 'conv2.weight': (dim, 1, 3, 3),  # depthwise, no bias
            u + 'norm.weight': (dim, ),
            u + 'norm.bias': (dim, ),
        })
    return shapes


def fabricate_delta(seed: int = 1, **sizes) -> dict:
    """A finished EoMT run's file: small ViT changes, unchanged pixel
    statistics, head values (they start from zero), masking probabilities
    annealed from 1 to 0."""
    generator = torch.Generator().manual_seed(seed)
    delta = {}
    for name, shape in eomt_delta_shapes(**sizes).items():
        value = torch.randn(shape, generator=generator)
        delta[name] = value * (0.01 if name.startswith(B) else 0.1)
    delta['network.encoder.pixel_mean'].zero_()
    delta['network.encoder.pixel_std'].zero_()
    delta['network.attn_mask_probs'].fill_(-1)
    delta['criterion.empty_weight'] = torch.ones(CLASSES + 1)  # dropped
    return delta


def expected_weights(base: dict, delta: dict) -> dict:
    """base + delta in the segmentor's names, written out per tensor."""
    expected = {}
    for i in range(DEPTH):
        m, e = f'blocks.{i}.', f'{B}blocks.{i}.'
        d = {k[len(e):]: v for k, v in delta.items() if k.startswith(e)}
        zeros = torch.zeros_like(d['attention.q_proj.bias'])
        pairs = {
            'attn.qkv.weight':
            torch.cat([d[f'attention.{p}_proj.weight'] for p in 'qkv']),
            'attn.qkv.bias':
            torch.cat([
                d['attention.q_proj.bias'], zeros, d['attention.v_proj.bias']
            ]),
        }
        for meta, eomt in (('attn.proj', 'attention.o_proj'),
                           ('mlp.fc1', 'mlp.up_proj'), ('mlp.fc2',
                                                        'mlp.down_proj')):
            for kind in ('weight', 'bias'):
                pairs[f'{meta}.{kind}'] = d[f'{eomt}.{kind}']
        for n in (1, 2):
            pairs[f'ls{n}.gamma'] = d[f'layer_scale{n}.lambda1']
        for norm in ('norm1', 'norm2'):
            for kind in ('weight', 'bias'):
                pairs[f'{norm}.{kind}'] = d[f'{norm}.{kind}']
        for name, value in pairs.items():
            expected[f'backbone.{m}{name}'] = base[m + name] + value
        # Meta's key-bias mask is kept.
        expected[f'backbone.{m}attn.qkv.bias_mask'] = base[
            m + 'attn.qkv.bias_mask']
    for meta, eomt in (('cls_token', 'patch_embed.cls_token'),
                       ('storage_tokens', 'patch_embed.register_tokens'),
                       ('patch_embed.proj.weight',
                        'patch_embed.patch_embeddings.weight'),
                       ('patch_embed.proj.bias',
                        'patch_embed.patch_embeddings.bias'),
                       ('norm.weight', 'norm.weight'), ('norm.bias',
                                                        'norm.bias')):
        expected[f'backbone.{meta}'] = base[meta] + delta[B + eomt]
    for meta in ('mask_token', 'rope_embed.periods'):
        expected[f'backbone.{meta}'] = base[meta]
    heads = {
        'network.q.': 'decode_head.query_embed.',
        'network.class_head.': 'decode_head.cls_embed.',
        'network.mask_head.': 'decode_head.mask_embed.',
        'network.upscale.': 'decode_head.upscale.',
    }
    for key, value in delta.items():
        for old, new in heads.items():
            if key.startswith(old):
                expected[new + key[len(old):]] = value
    expected['decode_head.attn_mask_probs'] = torch.zeros(BLOCKS)
    return expected


def tiny_config(base_file=None) -> Config:
    """The official config with the reduced ViT-S/16 and 64-pixel
    windows."""
    cfg = Config.fromfile(str(REPO / 'configs' / f'{OFFICIAL}.py'))
    cfg.merge_from_dict(
        dict(
            model=dict(
                data_preprocessor=dict(size=(64, 64)),
                backbone=dict(
                    arch=dict(
                        _delete_=True, embed_dim=384, depth=DEPTH,
                        num_heads=6),
                    init_cfg=base_file
                    and dict(type='Pretrained', checkpoint=str(base_file))),
                decode_head=dict(
                    embed_dims=384,
                    num_queries=QUERIES,
                    num_blocks=BLOCKS,
                    mask_annealing=dict(
                        _delete_=True, start_iters=[1, 2], end_iters=[2, 3])),
                test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))))
    if base_file is None:
        cfg.model.backbone.init_cfg = None
    return cfg


def build(base_file=None):
    return MODELS.build(tiny_config(base_file).model).eval()


@pytest.fixture
def files(tmp_path):
    base = fabricate_meta_file(
        'vits16', tmp_path / 'meta.pth', depth=DEPTH, seed=0)
    delta = fabricate_delta()
    torch.save(delta, tmp_path / 'delta.bin')
    return base, delta, tmp_path / 'meta.pth', tmp_path / 'delta.bin'


def test_loaded_weights_are_base_plus_delta(files):
    base, delta, base_file, delta_file = files
    model = build(base_file)
    load_segmentor_checkpoint(model, str(delta_file))
    loaded = model.state_dict()
    expected = expected_weights(base, delta)
    assert set(expected) == set(loaded)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    # The ViT moved from Meta's weights by the deltas only.
    assert not torch.equal(loaded['backbone.blocks.0.attn.qkv.weight'],
                           base['blocks.0.attn.qkv.weight'])
    with torch.no_grad():  # and predicts
        masks, classes = model.extract_feat(
            torch.stack([x.float() for x in images(1, 64, 64)]))[-1]
    assert torch.isfinite(masks).all() and classes.shape == (1, QUERIES,
                                                             CLASSES + 1)


def test_delta_file_is_not_taken_for_a_dinov2_eomt_model():
    """The DINOv2 converter (and init_segmentor's "holds a backbone"
    check) leaves EoMT's DINOv3 files to the delta loader."""
    keys = dict.fromkeys(eomt_delta_shapes())
    assert not is_eomt_layout(keys)


def test_init_segmentor_takes_the_base_file_as_backbone(files):
    """init_segmentor(config, DELTA, backbone=BASE), as tools/inference.py
    --backbone: the base file is the backbone the deltas are added to."""
    from dinov2_seg.apis import init_segmentor
    base, delta, base_file, delta_file = files
    model = init_segmentor(
        tiny_config(), str(delta_file), backbone=str(base_file))
    expected = expected_weights(base, delta)
    torch.testing.assert_close(
        model.state_dict()['backbone.blocks.1.mlp.fc2.weight'],
        expected['backbone.blocks.1.mlp.fc2.weight'])


@pytest.mark.parametrize(
    'change, message',
    [(lambda d: d.pop(B + 'blocks.1.attention.k_proj.weight'),
      r'Missing keys \(1\): network\.encoder\.backbone\.blocks\.1\.'
      r'attention\.k_proj\.weight'),
     (lambda d: d.update(
         {B + 'blocks.0.attention.k_proj.bias': torch.zeros(384)}),
      r'Unexpected keys \(1\): network\.encoder\.backbone\.'
      r'blocks\.0\.attention\.k_proj\.bias'),
     (lambda d: d.update({B + 'norm.bias': torch.zeros(385)}),
      r'network\.encoder\.backbone\.'
      r'norm\.bias: file has \(385,\), Meta\'s DINOv3 backbone file .*meta'
      r'\.pth in EoMT\'s names expects \(384,\)'),
     (lambda d: d.pop('network.q.weight'),
      r'Missing keys \(1\): decode_head\.query_embed\.weight'),
     (lambda d: d.update({'network.extra.weight': torch.zeros(1)}),
      r'Unexpected keys \(1\): network\.extra\.weight')],
    ids=[
        'vit-missing', 'vit-extra', 'vit-shape', 'head-missing', 'head-extra'
    ])
def test_strict_checks_name_the_key(files, change, message):
    _, delta, base_file, delta_file = files
    change(delta)
    torch.save(delta, delta_file)
    with pytest.raises(ValueError, match=message):
        load_segmentor_checkpoint(build(base_file), str(delta_file))


def test_base_of_another_size_is_refused_naming_both(tmp_path, files):
    _, _, _, delta_file = files
    other = tmp_path / 'vitb.pth'
    fabricate_meta_file('vitb16', other, depth=DEPTH)
    with pytest.raises(ValueError) as error:
        load_segmentor_checkpoint(build(other), str(delta_file))
    text = str(error.value)
    assert "made for a DINOv3 ViT of arch \"no DINOv3 preset; closest " \
        "'vits16'" in text
    assert "vitb.pth is arch \"no DINOv3 preset; closest 'vitb16'" in text


def test_whole_weights_are_refused(files):
    """A file of whole ViT weights (EoMT trained with --model.delta_weights
    False) would double the ViT if added."""
    base, delta, base_file, delta_file = files
    for key in list(delta):
        if key.startswith(B + 'blocks.') and key.endswith('norm1.weight'):
            block = key[len(B):].split('.')[1]
            delta[key] = base[f'blocks.{block}.norm1.weight'] + 0.01
    delta[B + 'norm.weight'] = base['norm.weight'].clone()
    for block in range(DEPTH):
        delta[f'{B}blocks.{block}.norm2.weight'] = base[
            f'blocks.{block}.norm2.weight'].clone()
    torch.save(delta, delta_file)
    with pytest.raises(ValueError, match='holds whole ViT weights'):
        load_segmentor_checkpoint(build(base_file), str(delta_file))


def test_delta_alone_names_the_base_file_it_needs(tmp_path):
    """The released ViT-L delta without a base file: the error names Meta's
    file (shapes only, on the meta device)."""
    cfg = Config.fromfile(str(REPO / 'configs' / f'{OFFICIAL}.py'))
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        delta = {
            k: torch.empty(s)
            for k, s in eomt_delta_shapes(
                dim=1024, depth=24, hidden=4096, num_queries=100,
                num_blocks=4).items()
        }
    needed = (r"made for a DINOv3 ViT of arch 'vitl16': deltas to add to "
              r"Meta's dinov3_vitl16_pretrain_lvd1689m-\*\.pth "
              r'\(dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd\.pth')
    missing = tmp_path / 'nowhere.pth'
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(missing))
    with pytest.raises(
            FileNotFoundError,
            match=needed + r'.*nowhere\.pth.*does not exist'):
        load_eomt_deltas(model, delta, 'ade.bin')
    model.backbone.init_cfg = None
    with pytest.raises(
            ValueError,
            match=r'ade\.bin is one of EoMT\'s DINOv3 files, ' + needed +
            '.*init_cfg names no backbone file.*init_cfg.checkpoint='
            'checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth'):
        load_eomt_deltas(model, delta, 'ade.bin')


def test_released_layout_fits_the_official_config():
    """Every tensor of the released ViT-L delta (names and shapes from
    EoMT's modules) and of Meta's ViT-L file has its place in the official
    config's model, none missing: on the meta device."""
    cfg = Config.fromfile(str(REPO / 'configs' / f'{OFFICIAL}.py'))
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        delta = {
            k: torch.empty(s)
            for k, s in eomt_delta_shapes(
                dim=1024, depth=24, hidden=4096, num_queries=100,
                num_blocks=4).items()
        }
        base = fabricate_meta_state('vitl16', device='meta')
    pixel = [k for k in delta if 'pixel_' in k]
    for key in pixel:  # values cannot be checked on the meta device
        delta.pop(key)
    converted = apply_eomt_deltas(delta, base, 'delta', 'base')
    assert {
        k: tuple(v.shape)
        for k, v in converted.items()
    } == {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
    }


def test_official_config_is_eomts_dinov3_evaluation():
    """eomt_large_512.yaml (DINOv3) and EoMT's semantic evaluation, written
    out: ViT-L/16 from Meta's lvd1689m file, 100 queries in the last 4
    blocks, 150 classes, 512 windows spread along the long side after the
    short side is resized to 512 (PIL bilinear), masks upsampled before the
    sigmoid, ImageNet normalisation."""
    cfg = Config.fromfile(str(REPO / 'configs' / f'{OFFICIAL}.py'))
    backbone, head = cfg.model.backbone, cfg.model.decode_head
    assert (backbone.type, backbone.arch) == ('DinoV3VisionTransformer',
                                              'vitl16')
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth')
    assert (head.num_queries, head.num_blocks, head.num_classes) == (100, 4,
                                                                     150)
    assert head.resize_masks_first is True
    test_cfg = cfg.model.test_cfg
    assert (test_cfg.mode, test_cfg.crop_size,
            test_cfg.window_rule) == ('slide', (512, 512), 'spread')
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == pytest.approx([255 * m for m in IMAGENET[0]])
    assert preprocessor.std == pytest.approx([255 * s for s in IMAGENET[1]])
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = [t for t in pipeline if t.type == 'Resize']
    assert resize == [
        dict(
            type='Resize',
            scale=(1_000_000, 512),
            keep_ratio=True,
            interpolation='bilinear',
            backend='pillow')
    ]
    assert pipeline.index(resize[0]) < [t.type for t in pipeline
                                        ].index('DinoLoadAnnotations')
    assert cfg.val_dataloader.dataset.pipeline == pipeline


@pytest.mark.slow
def test_test_tool_takes_the_delta_and_the_configs_base_file(
        tmp_path, shapes_root, files):
    """`python tools/test.py configs/dinov3/ade20k_vitl16_eomt_official.py
    DELTA` as documented, on a fork of the official config at the reduced
    sizes whose backbone init_cfg names the fabricated Meta file: the tool
    loads both and reports an mIoU; without the base file it names the
    file needed."""
    _, _, base_file, delta_file = files
    config = tmp_path / 'official_tiny.py'
    config.write_text(f"""
_base_ = [{str(REPO / 'configs' / f'{OFFICIAL}.py')!r}]
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(
        arch=dict(_delete_=True, embed_dim=384, depth={DEPTH}, num_heads=6),
        init_cfg=dict(type='Pretrained', checkpoint={str(base_file)!r})),
    decode_head=dict(embed_dims=384, num_queries={QUERIES},
                     num_blocks={BLOCKS},
                     mask_annealing=dict(_delete_=True, start_iters=[1, 2],
                                         end_iters=[2, 3])),
    test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1_000_000, 64), keep_ratio=True,
         interpolation='bilinear', backend='pillow'),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(shapes_root)!r}, pipeline=test_pipeline))
val_dataloader = test_dataloader
""")
    # tools/test.py's main in this process (the script only calls it; the
    # docs-commands test runs the documented command as a script).
    from dinov2_seg.cli.test import main
    metrics = main(
        [str(config),
         str(delta_file), '--work-dir',
         str(tmp_path / 'work')])
    assert 0 <= metrics['mIoU'] <= 100
    # Without the base file the tool stops and says which one it needs.
    with pytest.raises(
            ValueError,
            match='made for a DINOv3 ViT of arch.*init_cfg names no backbone'):
        main([
            str(config),
            str(delta_file), '--work-dir',
            str(tmp_path / 'work2'), '--cfg-options',
            'model.backbone.init_cfg=None'
        ])


def test_swiglu_deltas_land_on_metas_w1_w2_w3():
    """ViT-S+/16 (SwiGLU): transformers' gate, up and down projections are
    Meta's w1, w2 and w3."""
    base = fabricate_meta_state('vits16plus', depth=DEPTH)
    delta = fabricate_delta(swiglu=True)
    summed = apply_eomt_deltas(delta, base, 'delta', 'base')
    for meta, eomt in (('w1', 'gate_proj'), ('w2', 'up_proj'), ('w3',
                                                                'down_proj')):
        for kind in ('weight', 'bias'):
            key = f'blocks.1.mlp.{meta}.{kind}'
            torch.testing.assert_close(
                summed['backbone.' + key],
                base[key] + delta[f'{B}blocks.1.mlp.{eomt}.{kind}'])


@pytest.mark.parametrize('swiglu', [False, True])
def test_delta_layout_is_transformers_dinov3_as_eomt_holds_it(swiglu):
    """The ViT part of eomt_delta_shapes against transformers' own
    DINOv3ViTModel (random, no download), renamed as EoMT's models/vit.py
    rearranges it: embeddings -> patch_embed without the mask token, the
    blocks (``layer``; ``model.layer`` in transformers 5) -> blocks."""
    transformers = require('transformers')
    hidden = 96
    config = transformers.DINOv3ViTConfig(
        hidden_size=48,
        num_hidden_layers=DEPTH,
        num_attention_heads=4,
        intermediate_size=hidden,
        use_gated_mlp=swiglu,
        num_register_tokens=4)
    names = {}
    for key, value in transformers.DINOv3ViTModel(config).state_dict().items():
        if key == 'embeddings.mask_token':
            continue
        key = re.sub(r'^embeddings\.', 'patch_embed.', key)
        key = re.sub(r'^(model\.)?layer\.', 'blocks.', key)
        names[B + key] = tuple(value.shape)
    expected = {
        k: s
        for k, s in eomt_delta_shapes(dim=48, hidden=hidden,
                                      swiglu=swiglu).items() if k.startswith(B)
    }
    assert names == expected
