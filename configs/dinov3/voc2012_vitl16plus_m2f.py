# Frozen DINOv3 ViT-L+/16 + Mask2Former on PASCAL VOC 2012: this project's
# recipe (_base_/models/dinov3_m2f.py), with blocks
# 4, 11, 17 and 23 of 24 feeding the feature pyramid (Meta's even
# intervals: the paper's ViT-L choice, not 5, 11, 17, 23).
_base_ = [
    '../_base_/models/dinov3_vitl16plus.py',
    '../_base_/models/dinov3_m2f.py',
    '../_base_/datasets/voc2012_m2f.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, out_indices=[4, 11, 17, 23]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(num_classes=21))
