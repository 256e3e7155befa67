# Mask2Former shapes demo on DINOv3: the recipe of the DINOv3 m2f configs
# (_base_/models/dinov3_m2f.py: a frozen ViT-S/16 at blocks 2, 5, 8, 11 ->
# DinoFeaturePyramid -> Mask2Former, mmseg's losses and optimiser) on a
# randomly initialised ViT-S/16 (no download), trained on the procedural
# shapes data (`python tools/make_shapes_dataset.py data/shapes`).
_base_ = [
    '../_base_/models/dinov3_vits16.py',
    '../_base_/models/dinov3_m2f.py',
    '../_base_/datasets/shapes.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]

crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(256, 128),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

width = 64
attention = dict(embed_dims=width, num_heads=4)
ffn = dict(embed_dims=width, feedforward_channels=4 * width)
num_classes = len(_base_.metainfo['classes'])
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_base_.backbone, init_cfg=None),
    neck=dict(in_channels=_base_.embed_dim, out_channels=width),
    decode_head=dict(
        in_channels=[width] * 4,
        feat_channels=width,
        out_channels=width,
        num_classes=num_classes,
        num_queries=16,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=width, num_heads=4),
                    ffn_cfg=ffn)),
            positional_encoding=dict(num_feats=width // 2)),
        positional_encoding=dict(num_feats=width // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=attention,
                cross_attn_cfg=attention,
                ffn_cfg=ffn)),
        train_cfg=dict(num_points=1024)),
    test_cfg=dict(crop_size=crop_size, stride=(96, 96)))

max_iters = 60
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, end=10),
    dict(type='PolyLR', power=0.9, by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
