# The official *linear* recipe: a BNHead on the last of the four returned
# blocks, slide inference with 512 crops and stride 341.
# Defaults to ViT-S sizes; top-level configs set the backbone and widths.
model = dict(
    type='BatchedEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    backbone=dict(type='DinoVisionTransformer', arch='vits14'),
    decode_head=dict(
        type='BNHead',
        in_channels=[384],
        in_index=[3],
        input_transform='resize_concat',
        dropout_ratio=0,
        num_classes=150,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # fast_inference: batched windows merged at the original size
    # (BatchedEncoderDecoder); False runs mmseg's stock slide inference.
    # window_batch_size caps the windows per backbone call (GPU memory).
    test_cfg=dict(
        mode='slide',
        crop_size=(512, 512),
        stride=(341, 341),
        fast_inference=True,
        window_batch_size=8))
