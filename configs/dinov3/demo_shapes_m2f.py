# Mask2Former shapes demo on DINOv3: the recipe of the DINOv3 m2f configs
# (_base_/models/dinov3_m2f.py: a frozen ViT-S/16 read at Meta's
# even-interval blocks 2, 5, 8, 11 -> DinoFeaturePyramid -> Mask2Former,
# mmseg's losses, matching and optimiser) on a randomly initialised ViT-S/16
# (no download), trained on the procedural shapes data (`python
# tools/make_shapes_dataset.py data/shapes`). Scaled down to train and
# test in well under a minute of one CPU core (tests/test_dinov3_m2f_configs
# .py runs it in the suite):
# - 128-pixel crops (8 x 8 patches; levels 32, 16, 8 and 4 cells), as the
#   DINOv3 EoMT demo, and its test scale;
# - a 64-channel neck and head, 16 queries, 1 pixel-decoder layer, 3
#   decoder layers, losses on 1024 sampled points (the recipe's 12544 are
#   for 512 crops);
# - 50 iterations of 4 images at lr 2e-3 (the recipe's 1e-4 is for 40k
#   iterations), 10 of warm-up, then poly 0.9 as the recipe.
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

# Narrow and shallow: the recipe's modules at a fraction of the cost.
_width = 64
_attention = dict(embed_dims=_width, num_heads=4)
_ffn = dict(embed_dims=_width, feedforward_channels=4 * _width)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # No init_cfg: random weights (a warning says so). With Meta's file in
    # checkpoints/, drop init_cfg=None to load it.
    backbone=dict(_base_.backbone, init_cfg=None),
    neck=dict(in_channels=_base_.embed_dim, out_channels=_width),
    decode_head=dict(
        in_channels=[_width] * 4,
        feat_channels=_width,
        out_channels=_width,
        num_classes=len(_base_.metainfo['classes']),
        num_queries=16,
        pixel_decoder=dict(
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(self_attn_cfg=_attention, ffn_cfg=_ffn)),
            positional_encoding=dict(num_feats=_width // 2)),
        positional_encoding=dict(num_feats=_width // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=_attention,
                cross_attn_cfg=_attention,
                ffn_cfg=_ffn)),
        train_cfg=dict(num_points=1024)),
    test_cfg=dict(crop_size=crop_size, stride=(96, 96)))

max_iters = 50
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, end=10),
    dict(type='PolyLR', power=0.9, by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
# A fixed seed makes the numbers reproducible.
randomness = dict(seed=0)
