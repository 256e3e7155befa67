# Data recipe of the official *linear* heads (512 crops, single-scale test):
# pipelines and loaders; dataset configs add type, root and folders.
# Labels: DinoLoadAnnotations takes reduce_zero_label from the dataset, so
# the same pipelines serve ADE20K (reduce) and VOC (no reduce).
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # Padding to crop_size (labels with 255) is done by the model's
    # SegDataPreProcessor.
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # Ground truth is loaded after Resize: mIoU is computed at the original
    # resolution, on predictions resized back.
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2,  # per GPU; the official runs used 8 GPUs
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
# The multi-scale flip test of the recipes that have one (`tools/test.py
# --tta`): after the recipe's resize to each test scale, both flips, then
# the labels (at the original resolution) and the packing.
tta_flip_stages = [
    [
        dict(type='RandomFlip', prob=0., direction='horizontal'),
        dict(type='RandomFlip', prob=1., direction='horizontal')
    ],
    [dict(type='DinoLoadAnnotations')],
    [dict(type='PackSegInputs')],
]
