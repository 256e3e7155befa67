# EoMT's training augmentation (datasets/transforms.py of tue-mps/eomt,
# ADE20K 512): scale jitter 0.5-2.0 of the size whose longer side is 512
# (torchvision's ScaleJitter), a random 512 crop (padded with ignored
# labels by the data preprocessor), horizontal flip and colour jitter
# (brightness 32, contrast and saturation 0.5-1.5, hue 18: the ranges of
# mmseg's PhotoMetricDistortion). The dataset configs take it as their
# train_pipeline and keep the Mask2Former recipe's test pipelines.
eomt_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    # keep_ratio with a square scale: the longer side becomes 512 * ratio.
    dict(
        type='RandomResize',
        scale=(512, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # A plain random crop, as EoMT's (no cat_max_ratio).
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
