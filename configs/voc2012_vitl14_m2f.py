# Frozen DINOv2 ViT-L/14 + Mask2Former on PASCAL VOC 2012:
# this project's recipe (_base_/models/dinov2_m2f.py; Meta released no
# Mask2Former for it), with
# blocks 5, 11, 17 and 23 of 24 feeding the feature pyramid.
_base_ = [
    '_base_/models/dinov2_vitl14.py',
    '_base_/models/dinov2_m2f.py',
    '_base_/datasets/voc2012_m2f.py',
    '_base_/schedules/schedule_m2f_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, out_indices=[5, 11, 17, 23]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(num_classes=21))
