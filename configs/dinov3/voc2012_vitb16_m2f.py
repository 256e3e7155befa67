# Frozen DINOv3 ViT-B/16 + Mask2Former on PASCAL VOC 2012: this project's
# recipe (_base_/models/dinov3_m2f.py), with blocks
# 2, 5, 8 and 11 of 12 feeding the feature pyramid (Meta's even
# intervals).
_base_ = [
    '../_base_/models/dinov3_vitb16.py',
    '../_base_/models/dinov3_m2f.py',
    '../_base_/datasets/voc2012_m2f.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, out_indices=[2, 5, 8, 11]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(num_classes=21))
