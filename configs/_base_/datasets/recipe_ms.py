# Data recipe of the official *ms* heads (640 crops; `tools/test.py --tta`
# runs the multi-scale + flip test): the linear recipe's loaders with other
# pipelines. mmseg 0.x's img_scale=(99999999, 640) means "short side 640,
# long side unbounded".
_base_ = ['./recipe_linear.py']
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(99999999, 640),
        ratio_range=(1.0, 3.0),
        keep_ratio=True),
    # The official ms recipe crops without a category-ratio constraint.
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(99999999, 640), keep_ratio=True),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
# mmseg 0.x MultiScaleFlipAug multiplied the base scale by each ratio (mmseg
# 1.x's scale_factor would multiply the original image size instead).
img_ratios = [1.0, 1.32, 1.73, 2.28, 3.0]
# How many of those scales `--tta` uses, from the first: the official
# notebook's HEAD_SCALE_COUNT (1..5; fewer is faster, 5 is the published
# setting). E.g. `tools/test.py ... --tta --cfg-options tta_scale_count=3`.
tta_scale_count = 5
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(
                type='Resize',
                scale=(int(99999999 * r), int(640 * r)),
                keep_ratio=True) for r in img_ratios
        ], *_base_.tta_flip_stages])
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
