# EoMT, the encoder-only mask transformer (Kerssies et al., "Your ViT is
# Secretly an Image Segmentation Model", CVPR 2025; github.com/tue-mps/eomt)
# on a fine-tuned DINOv2. Settings are those of EoMT's ADE20K 512 semantic
# recipe (configs/dinov2/ade20k/semantic/eomt_large_512.yaml and the
# defaults of its models/eomt.py and training/mask_classification_semantic.py),
# unless marked otherwise. Defaults to ViT-S sizes and 150 classes;
# top-level configs set the backbone, the blocks with queries and their
# mask-annealing iterations, and the classes.
# The inputs and the slide windows are segmentor.py's: EoMT divides by 255
# and normalises with ImageNet's statistics (the same on 0-255 images);
# EoMT's evaluation resizes the short side to 512 and spreads
# ceil(long / 512) windows evenly, which mmseg's 512 / 341 slide matches
# only up to aspect 5:3 (ADE20K's usual 4:3 images); the official-model
# config (ade20k_vitl14_eomt_official.py) tests as EoMT does.
_base_ = ['./segmentor.py', './mask2former_losses.py']
num_classes = 150
model = dict(
    type='EoMTSegmentor',
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
        # (EoMT's rule, max(1, int(log2(patch)) - 2), gives two for its
        # patch size 16 and would give one at patch 14).
        num_upscale=2,
        masked_attention=True,
        # Masking probability per block: 1 until start, (1 - progress)^0.9
        # until end, 0 after (EoMT's poly_power). The iterations follow
        # EoMT's rule for a run of T iterations, given here as fractions of
        # train_cfg.max_iters (so a shortened run anneals in proportion):
        # each block's masking fades out over T/6, the first from T/6, the
        # last ending at 5T/6 (for ViT-L on ADE20K, T = 39120:
        # 6520-13040 ... 26080-32600). Top-level configs set them for their
        # number of blocks.
        mask_annealing=dict(
            start_fractions=[1 / 6, 5 / 12, 2 / 3],
            end_fractions=[1 / 3, 7 / 12, 5 / 6],
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
        # EoMT's losses and matching are Mask2Former's.
        **_base_.mask2former_losses))
# Sets the masking probabilities from the runner's iteration before each
# training step, and refuses a run that would end with masking still on.
# default_runtime.py owns custom_hooks, so the top-level configs add it:
# custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook].
mask_annealing_hook = dict(type='EoMTMaskAnnealingHook')
