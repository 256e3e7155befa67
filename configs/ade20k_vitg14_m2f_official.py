# Meta's released ViT-g/14 + ViT-Adapter + Mask2Former for ADE20K
# (dinov2_vitg14_ade20k_m2f.pth, 60.2 mIoU single-scale in the DINOv2 paper),
# loaded as published:
#   python tools/test.py configs/ade20k_vitg14_m2f_official.py \
#       checkpoints/dinov2_vitg14_ade20k_m2f.pth
# The file holds the whole model in mmseg 0.x names; it is converted on load
# and checked strictly (every tensor, every shape).
#
# Settings marked "(shape)" are fixed by the checkpoint: a wrong value is a
# load error naming the tensor. Settings marked "(not in the file)" leave no
# trace in the tensors' shapes; they follow ViT-Adapter's Mask2Former recipe
# for ADE20K at 896, which Meta's evaluation builds on. With Meta's
# dinov2_vitg14_ade20k_m2f_config.py (published beside the checkpoint) you
# can confirm all of them:
#   python tools/check_official_m2f_config.py dinov2_vitg14_ade20k_m2f_config.py
_base_ = [
    '_base_/datasets/ade20k_linear.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
]
crop_size = (896, 896)
num_classes = 150
embed_dim = 1536  # ViT-g
feat_channels = 1024  # (shape) head width
ffn_channels = 4096  # (shape) FFN width in the pixel decoder and decoder
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='ViTAdapter',
        arch='vitg14',
        img_size=518,  # (shape) 37x37 positional embedding
        patch_size=14,  # (shape)
        interaction_indexes=[[0, 9], [10, 19], [20, 29], [30, 39]],
        deform_num_heads=24,  # (not in the file) heads x points: (shape)
        num_points=4,  # (not in the file)
        deform_ratio=0.5,  # (shape) value width 768
        cffn_ratio=0.25,  # (shape)
        conv_inplane=64,  # (shape)
        gate_init=0.0,  # training only
        add_vit_feature=True,  # (not in the file)
        norm_cfg=norm_cfg,
        frozen=True),
    decode_head=dict(
        type='DinoMask2FormerHead',
        in_channels=[embed_dim] * 4,
        strides=[4, 8, 16, 32],
        feat_channels=feat_channels,
        out_channels=feat_channels,
        num_classes=num_classes,
        num_queries=200,  # (shape)
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,  # (shape)
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=feat_channels,
                        num_heads=32,  # (not in the file) heads x points
                        num_levels=3,
                        num_points=4,  # (not in the file)
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None),
                    ffn_cfg=dict(
                        embed_dims=feat_channels,
                        feedforward_channels=ffn_channels,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(
                num_feats=feat_channels // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,  # (shape)
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=feat_channels,
                    num_heads=32,  # (not in the file)
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True),
                cross_attn_cfg=dict(
                    embed_dims=feat_channels,
                    num_heads=32,  # (not in the file)
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True),
                ffn_cfg=dict(
                    embed_dims=feat_channels,
                    feedforward_channels=ffn_channels,
                    num_fcs=2,
                    act_cfg=dict(type='ReLU', inplace=True),
                    ffn_drop=0.0,
                    dropout_layer=None,
                    add_identity=True)),
            init_cfg=None),
        loss_cls=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=2.0,
            reduction='mean',
            class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=True,
            reduction='mean',
            loss_weight=5.0),
        loss_dice=dict(
            type='mmdet.DiceLoss',
            use_sigmoid=True,
            activate=True,
            reduction='mean',
            naive_dice=True,
            eps=1.0,
            loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(
                        type='mmdet.CrossEntropyLossCost',
                        weight=5.0,
                        use_sigmoid=True),
                    dict(
                        type='mmdet.DiceCost',
                        weight=5.0,
                        pred_act=True,
                        eps=1.0)
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    train_cfg=dict(),
    # (not in the file) ViT-Adapter's ADE20K 896 test: slide windows of the
    # crop size with stride 512.
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))

# Test: short side 896 (long side up to 3584), then sides rounded to a
# multiple of 32, which the adapter's coarsest prior level needs.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(3584, 896), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# Training is not part of Meta's release; this is ViT-Adapter's recipe
# at 896 with the ViT frozen, for fine-tuning the released model.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(3584, 896),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
