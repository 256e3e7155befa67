"""Meta's ViT-g + ViT-Adapter + Mask2Former file through the official config:
converted on load with every tensor placed, the full ViT-g manifest, the
class-count error, the config checker."""

import numpy as np
import pytest
import torch
from helpers.archs import TINY_SWIGLU_ARCH
from helpers.fabricate import fabricate_meta_m2f_file, meta_m2f_manifest
from helpers.tools import (REPO, check, predictions_miou, reported_miou, run,
                           shapes_labels)
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.meta_m2f import (convert_meta_m2f,
                                             is_meta_m2f_layout)
from dinov2_seg.checkpoints.meta_m2f_config import compare_m2f_configs
from dinov2_seg.cli.check_official_m2f_config import main

OFFICIAL_CFG = str(REPO / 'configs' / 'ade20k_vitg14_m2f_official.py')

# The official model at a size a CPU test can run: the file and the config
# are shrunk by the same settings.
SMALL_FILE = dict(
    dim=64,
    depth=4,
    grid=4,
    deform_heads=2,
    inplanes=16,
    feat=32,
    queries=10,
    classes=5,
    encoder_layers=2,
    encoder_heads=4,
    encoder_points=2,
    encoder_ffn=64,
    decoder_layers=2,
    decoder_ffn=64)
_ENC = 'model.decode_head.pixel_decoder.encoder.layer_cfg.'
_DEC = 'model.decode_head.transformer_decoder.layer_cfg.'


def small_options(classes: int = 5) -> dict:
    return {
        'model.backbone.arch': dict(_delete_=True, **TINY_SWIGLU_ARCH),
        'model.backbone.img_size': 56,
        'model.backbone.interaction_indexes': [[0, 0], [1, 1], [2, 2], [3, 3]],
        'model.backbone.deform_num_heads': 2,
        'model.backbone.conv_inplane': 16,
        'model.decode_head.in_channels': [64] * 4,
        'model.decode_head.feat_channels': 32,
        'model.decode_head.out_channels': 32,
        'model.decode_head.num_queries': 10,
        'model.decode_head.num_classes': classes,
        'model.decode_head.loss_cls.class_weight': [1.0] * classes + [0.1],
        'model.decode_head.pixel_decoder.encoder.num_layers': 2,
        _ENC + 'self_attn_cfg.embed_dims': 32,
        _ENC + 'self_attn_cfg.num_heads': 4,
        _ENC + 'self_attn_cfg.num_points': 2,
        _ENC + 'ffn_cfg.embed_dims': 32,
        _ENC + 'ffn_cfg.feedforward_channels': 64,
        'model.decode_head.pixel_decoder.positional_encoding.num_feats': 16,
        'model.decode_head.positional_encoding.num_feats': 16,
        'model.decode_head.transformer_decoder.num_layers': 2,
        _DEC + 'self_attn_cfg.embed_dims': 32,
        _DEC + 'self_attn_cfg.num_heads': 4,
        _DEC + 'cross_attn_cfg.embed_dims': 32,
        _DEC + 'cross_attn_cfg.num_heads': 4,
        _DEC + 'ffn_cfg.embed_dims': 32,
        _DEC + 'ffn_cfg.feedforward_channels': 64,
        # Keep the CPU test small: short side 128 instead of 896.
        'model.test_cfg.crop_size': (128, 128),
        'model.test_cfg.stride': (64, 64),
        'test_pipeline.1.scale': (512, 128),
    }


def small_model(classes: int = 5):
    cfg = Config.fromfile(OFFICIAL_CFG)
    cfg.merge_from_dict(small_options(classes))
    return MODELS.build(cfg.model).eval()


@pytest.fixture(scope='module')
def meta_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('m2f') / 'dinov2_vitg14_ade20k_m2f.pth'
    state = fabricate_meta_m2f_file(str(path), **SMALL_FILE)
    return path, state


def test_full_vitg_manifest_matches_the_official_config():
    """Every tensor of the released ViT-g file, converted, has a place of
    the same shape in the model of the official config, and nothing is
    left over (built on the meta device: 1.4 B parameters, no memory)."""
    cfg = Config.fromfile(OFFICIAL_CFG)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    manifest = meta_m2f_manifest()
    assert is_meta_m2f_layout(manifest)
    converted = convert_meta_m2f({
        k: torch.empty(s, device='meta')
        for k, s in manifest.items()
    })
    assert sorted(set(ours) - set(converted)) == []
    assert sorted(set(converted) - set(ours)) == []
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert len(ours) == 1095  # 40 blocks x 13 (w1/w2 fused), adapter, head


def test_loads_the_meta_file_every_tensor_in_place(meta_file):
    path, state = meta_file
    model = small_model()
    load_segmentor_checkpoint(model, str(path))
    loaded = model.state_dict()
    converted = convert_meta_m2f(state)
    assert set(loaded) == set(converted)
    for key, value in converted.items():
        assert torch.equal(loaded[key], value), key
    # The renames, spelled out against Meta's names.
    assert torch.equal(loaded['backbone.blocks.2.ls1.gamma'],
                       state['backbone.blocks.2.gamma1'])
    assert torch.equal(
        loaded['backbone.blocks.2.mlp.w12.weight'],
        torch.cat([
            state['backbone.blocks.2.mlp.w1.weight'],
            state['backbone.blocks.2.mlp.w2.weight']
        ]))
    dec = 'decode_head.transformer_decoder.layers.1.'
    assert torch.equal(loaded[dec + 'cross_attn.attn.in_proj_weight'],
                       state[dec + 'attentions.0.attn.in_proj_weight'])
    assert torch.equal(loaded[dec + 'self_attn.attn.out_proj.weight'],
                       state[dec + 'attentions.1.attn.out_proj.weight'])
    enc = 'decode_head.pixel_decoder.encoder.layers.0.'
    assert torch.equal(loaded[enc + 'self_attn.value_proj.weight'],
                       state[enc + 'attentions.0.value_proj.weight'])
    assert torch.equal(loaded[enc + 'ffn.layers.1.weight'],
                       state[enc + 'ffns.0.layers.1.weight'])


def test_official_config_predicts_with_the_meta_file(meta_file, tmp_path):
    path, _ = meta_file
    model = init_segmentor(
        OFFICIAL_CFG,
        checkpoint=str(path),
        device='cpu',
        cfg_options=small_options())
    image = np.random.default_rng(0).integers(
        0, 255, (100, 150, 3), dtype=np.uint8)
    labels = inference_segmentor(model, image)
    assert labels.shape == (100, 150)
    assert labels.min() >= 0 and labels.max() < 5


def test_class_count_mismatch_names_both_counts(tmp_path):
    path = tmp_path / 'm2f_7.pth'
    fabricate_meta_m2f_file(str(path), **dict(SMALL_FILE, classes=7))
    model = small_model(classes=5)
    with pytest.raises(ValueError) as error:
        load_segmentor_checkpoint(model, str(path))
    message = str(error.value)
    assert 'predicts 7 classes, the config 5' in message
    assert 'decode_head.cls_embed.weight' in message
    assert str(path) in message


def test_swiglu_halves_must_come_together():
    with pytest.raises(ValueError, match='found only w1'):
        convert_meta_m2f({'backbone.blocks.0.mlp.w1.weight': torch.zeros(2)})


# Meta's config is an mmseg 0.x file; this one has the structure of the
# released config (mmcv 1.x transformer layers) with the values under test.
OFFICIAL_CONFIG_TEXT = '''
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoderMask2Former',
    backbone=dict(
        type='ViTAdapter', pretrain_size=518, img_size=518, patch_size=14,
        embed_dim=1536, depth=40, num_heads=24, mlp_ratio=4, qkv_bias=True,
        ffn_type='swiglu', conv_inplane=64, n_points=4, deform_num_heads=24,
        init_values=0.0, cffn_ratio=0.25, deform_ratio=0.5,
        add_vit_feature=True, freeze_vit=True, use_cls=True,
        interaction_indexes=[[0, 9], [10, 19], [20, 29], [30, 39]]),
    decode_head=dict(
        type='Mask2FormerHead', in_channels=[1536, 1536, 1536, 1536],
        feat_channels=1024, out_channels=1024, in_index=[0, 1, 2, 3],
        num_things_classes=100, num_stuff_classes=50, num_queries=200,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder', num_outs=3,
            encoder=dict(
                type='DetrTransformerEncoder', num_layers=6,
                transformerlayers=dict(
                    type='BaseTransformerLayer',
                    attn_cfgs=dict(
                        type='MultiScaleDeformableAttention',
                        embed_dims=1024, num_heads=32, num_levels=3,
                        num_points=4),
                    ffn_cfgs=dict(
                        type='FFN', embed_dims=1024,
                        feedforward_channels=4096, num_fcs=2),
                    operation_order=('self_attn', 'norm', 'ffn', 'norm'))),
            positional_encoding=dict(
                type='SinePositionalEncoding', num_feats=512,
                normalize=True)),
        transformer_decoder=dict(
            type='DetrTransformerDecoder', num_layers=9,
            transformerlayers=dict(
                type='DetrTransformerDecoderLayer',
                attn_cfgs=dict(
                    type='MultiheadAttention', embed_dims=1024,
                    num_heads=32),
                ffn_cfgs=dict(embed_dims=1024, feedforward_channels=4096),
                feedforward_channels=4096,
                operation_order=('cross_attn', 'norm', 'self_attn', 'norm',
                                 'ffn', 'norm')))),
    test_cfg=dict(mode='slide', crop_size=(896, 896), stride=(512, 512)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(3584, 896), flip=False,
         transforms=[
             dict(type='Resize', keep_ratio=True),
             dict(type='ResizeToMultiple', size_divisor=32),
             dict(type='RandomFlip'),
             dict(type='Normalize', mean=[123.675, 116.28, 103.53],
                  std=[58.395, 57.12, 57.375], to_rgb=True),
             dict(type='ImageToTensor', keys=['img']),
             dict(type='Collect', keys=['img'])])]
data = dict(test=dict(type='ADE20KDataset', pipeline=test_pipeline))
'''


def test_config_checker_agrees_and_flags_differences(tmp_path, capsys):
    official = tmp_path / 'dinov2_vitg14_ade20k_m2f_config.py'
    official.write_text(OFFICIAL_CONFIG_TEXT)
    rows = compare_m2f_configs(
        Config.fromfile(str(official)), Config.fromfile(OFFICIAL_CFG))
    assert len(rows) == 33
    assert [r['name'] for r in rows if not r['same']] == []
    assert main([str(official), '--config', OFFICIAL_CFG]) == 0
    assert 'All settings match.' in capsys.readouterr().out

    official.write_text(
        OFFICIAL_CONFIG_TEXT.replace('num_heads=32),\n                ffn',
                                     'num_heads=16),\n                ffn'))
    assert main([str(official), '--config', OFFICIAL_CFG]) == 1
    out = capsys.readouterr().out
    assert "DIFF decoder heads" in out and 'official 16' in out
    assert '1 setting(s) differ' in out


def test_official_test_and_tta_sizes_suit_the_adapter(tmp_path):
    """Every test and --tta view is resized to sides that are multiples of
    32, which the adapter requires."""
    import cv2
    from mmcv.transforms import Compose
    image = tmp_path / 'odd.jpg'
    cv2.imwrite(str(image), np.zeros((333, 517, 3), np.uint8))
    cfg = Config.fromfile(OFFICIAL_CFG)
    steps = [
        s for s in cfg.test_pipeline if s['type'] != 'DinoLoadAnnotations'
    ]
    packed = Compose(steps)(dict(img_path=str(image)))
    assert tuple(packed['inputs'].shape[1:]) == (896, 1408)
    tta = cfg.tta_pipeline[1]['transforms']
    assert tta[1] == [dict(type='ResizeToMultiple', size_divisor=32)]
    views = Compose([cfg.tta_pipeline[0]])(dict(img_path=str(image)))
    shapes = []
    for resize in tta[0]:
        view = Compose([resize, *tta[1]])(dict(views))
        shapes.append(view['img'].shape[:2])
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in shapes)
    assert shapes[2] == (896, 1408)  # ratio 1.0 is the single-scale size


@pytest.mark.slow
def test_tools_test_runs_the_meta_file(meta_file, tmp_path, shapes_root):
    """tools/test.py CONFIG dinov2_vitg14_ade20k_m2f.pth, as a user runs it
    (the official config shrunk to the fabricated file, on the shapes
    data): converted on load, evaluated, mIoU printed."""
    path, _ = meta_file
    cfg = Config.fromfile(OFFICIAL_CFG)
    cfg.merge_from_dict(small_options())
    cfg.test_dataloader = dict(
        batch_size=1,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='BaseSegDataset',
            data_root=str(shapes_root),
            data_prefix=dict(
                img_path='images/validation',
                seg_map_path='annotations/validation'),
            metainfo=dict(classes=('sky', 'ground', 'disc', 'box', 'tri')),
            reduce_zero_label=True,
            pipeline=cfg.test_pipeline))
    config = tmp_path / 'official_small.py'
    cfg.dump(str(config))
    preds = tmp_path / 'preds'
    output = check(
        run('tools/test.py', config, path, '--work-dir', tmp_path / 'work',
            '--out', preds))
    assert reported_miou(output) == pytest.approx(
        predictions_miou(preds, shapes_labels(shapes_root)), abs=0.01)
