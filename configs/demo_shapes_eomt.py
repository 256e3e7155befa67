# EoMT on the procedural shapes data (`python tools/make_shapes_dataset.py
# data/shapes`), small enough to train on 2 CPU cores in a few minutes:
# a 6-block, 192-wide DINOv2-style ViT trained from scratch (no download),
# 16 queries in its last 2 blocks, 126-pixel crops, 80 iterations. The
# model, losses, masked-attention annealing, optimiser and schedule are
# those of the EoMT configs, scaled down; from scratch, the lr is higher
# and not decayed by layer (there are no pretrained layers to protect).
_base_ = [
    '_base_/models/dinov2_eomt.py',
    '_base_/datasets/shapes.py',
    '_base_/schedules/schedule_eomt_40k.py',
    '_base_/default_runtime.py',
]

# 9 x 9 patches of 14 pixels: the stored position grid, so training crops
# need no position resize.
crop_size = (126, 126)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='EoMTColorJitter'),
    dict(
        type='RandomResize',
        scale=(250, 126),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(250, 126), keep_ratio=True),
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
        arch=dict(
            _delete_=True,
            embed_dim=192,
            depth=6,
            num_heads=3,
            ffn='mlp',
            num_register_tokens=4,
            interpolate_offset=0.0,
            interpolate_antialias=True),
        img_size=126),
    decode_head=dict(
        num_classes=len(_base_.metainfo['classes']),
        embed_dims=192,
        num_queries=16,
        num_blocks=2,
        # EoMT's rule: each block's masking fades over T/6, the first
        # from T/6, the last ending at 5T/6 (13-27 and 53-67 at T = 80).
        mask_annealing=dict(
            start_fractions=[1 / 6, 2 / 3], end_fractions=[1 / 3, 5 / 6]),
        train_cfg=dict(num_points=1024)),
    test_cfg=dict(crop_size=crop_size, stride=(84, 84)))
optim_wrapper = dict(
    optimizer=dict(lr=5e-4), paramwise_cfg=dict(layer_decay_rate=1.0))
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
# A fixed seed makes the README's numbers reproducible.
randomness = dict(seed=0)
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
