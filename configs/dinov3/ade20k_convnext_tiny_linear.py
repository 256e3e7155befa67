# Frozen DINOv3 ConvNeXt-T, Meta's linear recipe: BN + 1x1 conv on the
# last stage, single-scale slide test (`--tta`: Meta's multi-scale flip).
# DINOv3 MODEL_CARD.md: 42.7 mIoU.
# Meta's ConvNeXt built from its training configs (patch_size 16) resizes
# the last stage bilinearly to stride 16 before the head; BN and the 1x1
# conv act per pixel, so that only changes the order of two bilinear
# resizes of the logits (the features here stay at stride 32).
_base_ = [
    '../_base_/models/dinov3_convnext_tiny.py',
    '../_base_/models/dinov3_linear.py',
    '../_base_/datasets/dinov3_ade20k_linear.py',
    '../_base_/schedules/dinov3_schedule_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim], num_classes=150))
