# Frozen DINOv2 ViT-S/14, linear head: BN + 1x1 conv on the last
# block, single-scale slide test.
_base_ = [
    '_base_/models/dinov2_vits14.py',
    '_base_/models/dinov2_linear.py',
    '_base_/datasets/voc2012_linear.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim], num_classes=21))
