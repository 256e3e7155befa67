# Frozen DINOv3 ViT-S/16, Meta's linear recipe: BN + 1x1 conv on the last
# layer, single-scale slide test (`tools/test.py --tta`: Meta's
# multi-scale flip test, ratios 0.9-1.1).
# DINOv3 MODEL_CARD.md: 47.0 mIoU.
_base_ = [
    '../_base_/models/dinov3_vits16.py',
    '../_base_/models/dinov3_linear.py',
    '../_base_/datasets/dinov3_ade20k_linear.py',
    '../_base_/schedules/dinov3_schedule_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim], num_classes=150))
