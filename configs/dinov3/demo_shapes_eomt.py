# The EoMT shapes demo (configs/demo_shapes_eomt.py) on DINOv3: EoMT on the
# procedural shapes data (`python tools/make_shapes_dataset.py data/shapes`)
# with a 6-block, 192-wide DINOv3 ViT (patch 16, 4 storage tokens, RoPE)
# trained from scratch (no download), 16 queries in its last 2 blocks,
# 128-pixel crops (8 x 8 patches), 80 iterations. Model, losses, masked
# attention and RoPE augmentation are those of the DINOv3 EoMT configs;
# from scratch, the lr is higher, with the DINOv2 demo's short warm-ups.
_base_ = [
    '../_base_/models/dinov3_eomt.py',
    '../_base_/datasets/shapes.py',
    '../_base_/schedules/dinov3_eomt_schedule_20k.py',
    '../_base_/default_runtime.py',
]

crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='EoMTColorJitter'),
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

max_iters = 80
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dim=192, depth=6, num_heads=3),
        init_cfg=None),
    decode_head=dict(
        num_classes=len(_base_.metainfo['classes']),
        embed_dims=192,
        num_queries=16,
        num_blocks=2,
        # EoMT's rule as in the DINOv2 demo (13-27 and 53-67 at T = 80).
        mask_annealing=dict(
            start_fractions=[1 / 6, 2 / 3], end_fractions=[1 / 3, 5 / 6]),
        train_cfg=dict(num_points=1024)),
    test_cfg=dict(crop_size=crop_size, stride=(96, 96)))
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(
        type='TwoStageWarmupPolyLR',
        warmup_iters=10,
        backbone_warmup_iters=10,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
