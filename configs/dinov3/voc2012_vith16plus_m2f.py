# Frozen DINOv3 ViT-H+/16 + Mask2Former on PASCAL VOC 2012: this project's
# recipe (_base_/models/dinov3_m2f.py), with blocks
# 7, 15, 23 and 31 of 32 feeding the feature pyramid (Meta's even
# intervals).
_base_ = [
    '../_base_/models/dinov3_vith16plus.py',
    '../_base_/models/dinov3_m2f.py',
    '../_base_/datasets/voc2012_m2f.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, out_indices=[7, 15, 23, 31]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(num_classes=21))
