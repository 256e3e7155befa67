# The Mask2Former data recipe (recipe_m2f.py) for the DINOv3 adapter, whose
# input sides must be multiples of 32 (Meta's adapter splits its prior into
# exact stride 8/16/32 levels): after each test resize the image is rounded
# to a multiple of 32, as DINOv2's ViT-Adapter configs do. Training is
# unchanged: crops are padded to 512 x 512 by the data preprocessor.
_base_ = ['./recipe_m2f.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(2048 * r), int(512 * r)),
                    keep_ratio=True) for r in _base_.img_ratios
            ],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            *_base_.tta_flip_stages,
        ])
]
