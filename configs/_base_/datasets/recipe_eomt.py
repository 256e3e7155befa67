# EoMT's training augmentation (datasets/transforms.py of tue-mps/eomt,
# ADE20K 512): colour jitter on the whole image first (EoMTColorJitter,
# torchvision semantics: brightness x U(1 - 32/255, 1 + 32/255), contrast
# and saturation x U(0.5, 1.5), hue +-18 degrees, each with p 0.5, contrast
# before or after saturation/hue at random; mmseg's PhotoMetricDistortion
# is another augmentation: additive brightness +-32 and hue_delta 18 in
# OpenCV units, +-36 degrees), then scale jitter 0.5-2.0 of the size whose
# longer side is 512 (torchvision's ScaleJitter), a random 512 crop (padded
# with ignored labels by the data preprocessor) and a horizontal flip. The
# dataset configs take it as their train_pipeline and keep the Mask2Former
# recipe's test pipelines.
eomt_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='EoMTColorJitter'),
    # keep_ratio with a square scale: the longer side becomes 512 * ratio.
    dict(
        type='RandomResize',
        scale=(512, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    # A plain random crop, as EoMT's (no cat_max_ratio).
    dict(type='RandomCrop', crop_size=(512, 512)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
