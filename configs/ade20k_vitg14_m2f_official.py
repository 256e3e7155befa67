# Meta's released ViT-g/14 + ViT-Adapter + Mask2Former for ADE20K
# (dinov2_vitg14_ade20k_m2f.pth, 60.2 mIoU single-scale in the DINOv2 paper),
# loaded as published:
#   python tools/test.py configs/ade20k_vitg14_m2f_official.py \
#       checkpoints/dinov2_vitg14_ade20k_m2f.pth
# The file holds the whole model in mmseg 0.x names; it is converted on load
# and checked strictly (every tensor, every shape).
#
# Settings marked "(shape)" are fixed by the checkpoint: a wrong value is a
# load error naming the tensor. Settings marked "(not in the file)" leave no
# trace in the tensors' shapes; they follow ViT-Adapter's Mask2Former recipe
# for ADE20K at 896, which Meta's evaluation builds on. With Meta's
# dinov2_vitg14_ade20k_m2f_config.py (published beside the checkpoint) you
# can confirm all of them:
#   python tools/check_official_m2f_config.py \
#       checkpoints/dinov2_vitg14_ade20k_m2f_config.py
_base_ = [
    '_base_/models/dinov2_m2f.py',
    '_base_/datasets/ade20k_m2f.py',
    '_base_/schedules/schedule_m2f_40k.py',
    '_base_/default_runtime.py',
]
crop_size = (896, 896)
num_classes = 150
embed_dim = 1536  # ViT-g
feat_channels = 1024  # (shape) head width
ffn_channels = 4096  # (shape) FFN width in the pixel decoder and decoder
heads = 32  # (not in the file) pixel decoder and decoder attention heads
_attention = dict(embed_dims=feat_channels, num_heads=heads)
_ffn = dict(embed_dims=feat_channels, feedforward_channels=ffn_channels)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='DinoViTAdapter',
        arch='vitg14',
        img_size=518,  # (shape) 37x37 positional embedding
        patch_size=14,  # (shape)
        interaction_indexes=[[0, 9], [10, 19], [20, 29], [30, 39]],
        deform_num_heads=24,  # (not in the file) heads x points: (shape)
        num_points=4,  # (not in the file)
        deform_ratio=0.5,  # (shape) value width 768
        cffn_ratio=0.25,  # (shape)
        conv_inplane=64,  # (shape)
        gate_init=0.0,  # training only
        add_vit_feature=True,  # (not in the file)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        frozen=True),
    # The adapter's pyramid goes straight to the head.
    neck=None,
    decode_head=dict(
        in_channels=[embed_dim] * 4,
        feat_channels=feat_channels,
        out_channels=feat_channels,
        num_classes=num_classes,
        num_queries=200,  # (shape)
        pixel_decoder=dict(
            encoder=dict(
                num_layers=6,  # (shape)
                layer_cfg=dict(
                    # num_points: (not in the file) heads x points: (shape)
                    self_attn_cfg=dict(_attention, num_points=4),
                    ffn_cfg=_ffn)),
            positional_encoding=dict(num_feats=feat_channels // 2)),
        positional_encoding=dict(num_feats=feat_channels // 2),
        transformer_decoder=dict(
            num_layers=9,  # (shape)
            layer_cfg=dict(
                self_attn_cfg=_attention,
                cross_attn_cfg=_attention,
                ffn_cfg=_ffn))),
    # (not in the file) ViT-Adapter's ADE20K 896 test: slide windows of the
    # crop size with stride 512. One window per backbone call: one 896
    # window peaks at 8.64 GiB in fp32 (docs/benchmarks.md), so that a
    # 24 GB GPU holds it; the GPU default of 8 would not fit.
    test_cfg=dict(crop_size=crop_size, stride=(512, 512), window_batch_size=1))

# Test: short side 896 (long side up to 3584), then sides rounded to a
# multiple of 32, which the adapter's coarsest prior level needs.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(3584, 896), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
# Training is not part of Meta's release; this is ViT-Adapter's ADE20K
# recipe at 896 (on this project's Mask2Former schedule) with the ViT
# frozen, for fine-tuning the released model.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(3584, 896),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# `--tta`: ViT-Adapter's multi-scale + flip test (not in the file), the
# same ratios of the 896 scale, each rounded to a multiple of 32 before the
# flips (the order of Meta's MultiScaleFlipAug).
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(3584 * r), int(896 * r)),
                    keep_ratio=True) for r in _base_.img_ratios
            ],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            *_base_.tta_flip_stages,
        ])
]
