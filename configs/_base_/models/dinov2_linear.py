# The official *linear* recipe: DinoBNHead on the last of the four returned
# blocks, slide inference with 512 crops and stride 341 (segmentor.py).
# Defaults to ViT-S sizes; top-level configs set the backbone and widths.
_base_ = ['./segmentor.py']
model = dict(
    backbone=dict(type='DinoVisionTransformer', arch='vits14'),
    decode_head=dict(
        type='DinoBNHead',
        in_channels=[384],
        in_index=[3],
        input_transform='resize_concat',
        dropout_ratio=0,
        num_classes=150,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
