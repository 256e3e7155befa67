# The DINOv2 demo (configs/demo_shapes_vits14_linear.py) on DINOv3: Meta's
# DINOv3 linear head (last layer, backbone norm, BN + 1x1 conv, dropout
# 0.1) on a frozen, randomly initialised ViT-S/16 (no download needed),
# trained on the procedural shapes dataset (`python
# tools/make_shapes_dataset.py data/shapes`). Smaller crops and a short
# schedule (Meta's warm-up + cosine shape, scaled down) keep it to a few
# minutes on 2 CPU cores (100 iterations; the DINOv2 demo trains 150).
_base_ = [
    '../_base_/models/dinov3_vits16.py',
    '../_base_/models/dinov3_linear.py',
    '../_base_/datasets/shapes.py',
    '../_base_/schedules/dinov3_schedule_40k.py',
    '../_base_/default_runtime.py',
]

crop_size = (224, 224)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(448, 224),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 224), keep_ratio=True),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    # No init_cfg: random weights (a warning says so). With Meta's file in
    # checkpoints/, drop this line to load it.
    backbone=dict(_base_.backbone, init_cfg=None),
    decode_head=dict(
        in_channels=[_base_.embed_dim],
        num_classes=len(_base_.metainfo['classes'])),
    test_cfg=dict(crop_size=crop_size, stride=(149, 149)))

max_iters = 100
param_scheduler = [
    dict(
        type='DinoV3WarmupCosineLR',
        warmup_iters=15,
        warmup_ratio=1e-6,
        by_epoch=False,
        begin=0,
        end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
# A fixed seed makes the numbers reproducible.
randomness = dict(seed=0)
