# Data recipe of Meta's DINOv3 *linear* heads (dinov3/eval/segmentation:
# config-ade20k-linear-training.yaml and transforms.py): the DINOv2 linear
# loaders (recipe_linear.py) with these pipelines.
# - Images are resized as Meta's torchvision transforms resize PIL images:
#   with PIL's bilinear filter, which averages over the whole footprint
#   when shrinking (antialiased), through mmcv's pillow backend (as
#   ade20k_vitl14_eomt_official.py); labels with nearest. Meta fixes the
#   short side (long side unbounded): 512 * ratio in training, 512 at test;
#   mmcv's scale (1_000_000, s) with keep_ratio does that (sizes rounded as
#   int(x + 0.5) like Meta's, up to the float order of one product).
# - Train: ratio 0.5-2.0, random 512 crop (at most 75% of one class, 10
#   tries, as Meta's RandomCropWithLabel), flip 0.5, photometric
#   distortion, padding to 512 (labels 255) by the data preprocessor.
#   Meta's distortion shifts the hue by up to half the colour circle
#   either way (torchvision's adjust_hue, hue_range (-0.5, 0.5)); mmseg's
#   hue_delta is in OpenCV's 0-180 hue units, so 90 covers the same range
#   (its saturation step scales HSV saturation where torchvision blends
#   with the grey image: same range of factors, 0.5-1.5).
# - Test: short side 512, slide 512 / 341, single scale ("use_tta:
#   False"); mIoU at the original resolution.
_base_ = ['./recipe_linear.py']
crop_size = (512, 512)
pil_resize = dict(keep_ratio=True, interpolation='bilinear', backend='pillow')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(1_000_000, 512),
        ratio_range=(0.5, 2.0),
        **pil_resize),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', hue_delta=90),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1_000_000, 512), **pil_resize),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
# `tools/test.py --tta`: Meta's DINOv3 multi-scale flip test (its
# make_segmentation_eval_transforms with use_tta, as its published
# Mask2Former config sets it: ratios 0.9-1.1 of the 512 short side, both
# flips, softmax averaged at the original resolution). Meta's rule for the
# short side: int(512 * ratio), rounded up to a multiple of 32 below ratio
# 1: 480, 512, 512, 537, 563.
tta_ratios = [0.9, 0.95, 1.0, 1.05, 1.1]
tta_short_sides = [
    -(-int(512 * r) // 32) * 32 if r < 1 else int(512 * r) for r in tta_ratios
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(type='Resize', scale=(1_000_000, side), **pil_resize)
            for side in tta_short_sides
        ], *_base_.tta_flip_stages])
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
