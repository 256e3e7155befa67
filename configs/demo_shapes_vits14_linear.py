# The README's demo: a linear head on a frozen, randomly initialised ViT-S/14
# (no download needed) trained on the procedural shapes dataset written by
# `python tools/make_shapes_dataset.py data/shapes`, declared as a custom
# dataset in _base_/datasets/shapes.py (the worked example of
# _base_/datasets/custom.py's fields). Smaller crops and a short schedule
# keep it to a few minutes on 2 CPU cores.
_base_ = [
    '_base_/models/dinov2_linear.py',
    '_base_/datasets/shapes.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
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
    # checkpoints/ add init_cfg=dict(type='Pretrained',
    # checkpoint='checkpoints/dinov2_vits14_pretrain.pth').
    backbone=dict(arch='vits14'),
    decode_head=dict(
        in_channels=[384], num_classes=len(_base_.metainfo['classes'])),
    test_cfg=dict(crop_size=crop_size, stride=(149, 149)))

max_iters = 150
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, end=30),
    dict(type='PolyLR', power=1.0, by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
# A fixed seed makes the README's numbers reproducible.
randomness = dict(seed=0)
