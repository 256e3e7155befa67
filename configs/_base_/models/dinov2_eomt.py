# EoMT, the encoder-only mask transformer (Kerssies et al., "Your ViT is
# Secretly an Image Segmentation Model", CVPR 2025; github.com/tue-mps/eomt)
# on a fine-tuned DINOv2. Settings are those of EoMT's ADE20K 512 semantic
# recipe (configs/dinov2/ade20k/semantic/eomt_large_512.yaml and the
# defaults of its models/eomt.py and training/mask_classification_semantic.py),
# unless marked otherwise. Defaults to ViT-S sizes and 150 classes;
# top-level configs set the backbone, the blocks with queries and their
# mask-annealing iterations, and the classes.
num_classes = 150
model = dict(
    type='EoMTSegmentor',
    # EoMT divides by 255 and normalises with ImageNet's statistics: the
    # same as these values on 0-255 images.
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    # The whole ViT is fine-tuned (EoMT), with no stochastic depth (timm's
    # default in EoMT's ViT). with_cp=True recomputes each block in the
    # backward pass (activation checkpointing; not in EoMT): less
    # activation memory for one more forward pass of the ViT.
    backbone=dict(
        type='DinoVisionTransformer',
        arch='vits14',
        frozen=False,
        drop_path_rate=0.0,
        with_cp=False),
    decode_head=dict(
        type='EoMTHead',
        num_classes=num_classes,
        embed_dims=384,
        # EoMT ADE20K: 100 queries (num_q).
        num_queries=100,
        # EoMT: queries in the last 4 blocks of ViT-L (ADE20K, COCO), 3 of
        # ViT-S/B and 5 of ViT-g (COCO); top-level configs set it.
        num_blocks=3,
        # Two 2x transposed-convolution blocks: masks at 4x the patch grid
        # (EoMT's rule gives two for its patch size 16).
        num_upscale=2,
        masked_attention=True,
        # Masking probability per block: 1 until start, (1 - progress)^0.9
        # until end, 0 after (EoMT's poly_power). Top-level configs set the
        # iterations (EoMT's rule, see there).
        mask_annealing=dict(
            start_iters=[6667, 16667, 26667],
            end_iters=[13333, 23333, 33333],
            power=0.9),
        # EoMT's no_object_coefficient; loss_cls.class_weight becomes
        # [1.0] * num_classes + [0.1].
        no_object_weight=0.1,
        # False: classes x masks at stride 4, then the class map is resized
        # (folded into the batched window merge). EoMT's own evaluation
        # resizes each query's mask logits first (the official-model config
        # sets True).
        resize_masks_first=False,
        align_corners=False,
        # EoMT's class_coefficient 2, mask_coefficient 5,
        # dice_coefficient 5: Mask2Former's losses (here mmdet's).
        loss_cls=dict(
            type='mmdet.CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=2.0,
            reduction='mean'),
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
        # EoMT's num_points 12544, oversample_ratio 3.0,
        # importance_sample_ratio 0.75, and matching costs equal to the
        # loss weights.
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
    # Batched windows merged at the original size (see dinov2_linear.py).
    # EoMT's evaluation resizes the short side to 512 and spreads
    # ceil(long / 512) windows evenly; mmseg's 512 / 341 slide gives the
    # same windows for ADE20K's usual 4:3 images.
    test_cfg=dict(
        mode='slide',
        crop_size=(512, 512),
        stride=(341, 341),
        fast_inference=True,
        window_batch_size=None))
