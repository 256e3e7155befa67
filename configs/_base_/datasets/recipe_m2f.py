# Data recipe of the Mask2Former configs: the linear recipe's 512 crops and
# single-scale test, plus a multi-scale + flip test for `tools/test.py
# --tta` at mmseg's Mask2Former ratios (0.5 to 1.75).
_base_ = ['./recipe_linear.py']
# Ratios multiply the test scale (2048, 512), as mmseg 0.x's
# MultiScaleFlipAug did; mmseg 1.x's Resize(scale_factor=r) would multiply
# the original image size instead.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(
                type='Resize',
                scale=(int(2048 * r), int(512 * r)),
                keep_ratio=True) for r in img_ratios
        ], *_base_.tta_flip_stages])
]
