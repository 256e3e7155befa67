# Frozen DINOv3 ViT-L+/16 (404M parameters) + Meta's DINOv3 adapter +
# Mask2Former at Meta's widths (_base_/models/dinov3_m2f_adapter.py) on
# ADE20K, trained: the adapter and the head learn, the ViT stays
# frozen (blocks [4, 11, 17, 23] read, Meta's rule). The lighter alternative is
# ade20k_vitl16plus_m2f.py (feature pyramid, 256-wide head). Data: the
# Mask2Former recipe with test sides rounded to a multiple of 32
# (_base_/datasets/recipe_m2f_adapter.py); schedule: the Mask2Former one.
_base_ = [
    '../_base_/models/dinov3_vitl16plus.py',
    '../_base_/models/dinov3_m2f_adapter.py',
    '../_base_/datasets/ade20k_m2f_adapter.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        arch=_base_.backbone.arch, init_cfg=_base_.backbone.init_cfg),
    decode_head=dict(in_channels=[_base_.embed_dim] * 4, num_classes=150))
