# Frozen DINOv2 ViT-S/14, linear head: BN + 1x1 conv on the last
# block, single-scale slide test.
# DINOv2 paper: 44.3 mIoU.
_base_ = [
    '_base_/models/dinov2_vits14.py',
    '_base_/models/dinov2_linear.py',
    '_base_/datasets/ade20k_linear.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim], num_classes=150))
