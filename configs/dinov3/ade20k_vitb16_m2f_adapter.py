# Frozen DINOv3 ViT-B/16 (85.7M parameters) + Meta's DINOv3 adapter +
# Mask2Former at Meta's widths (_base_/models/dinov3_m2f_adapter.py) on
# ADE20K, trained: the adapter and the head learn, the ViT stays
# frozen (blocks [2, 5, 8, 11] read, Meta's rule). The lighter alternative is
# ade20k_vitb16_m2f.py (feature pyramid, 256-wide head). Data: the
# Mask2Former recipe with test sides rounded to a multiple of 32
# (_base_/datasets/recipe_m2f_adapter.py); schedule: the Mask2Former one.
_base_ = [
    '../_base_/models/dinov3_vitb16.py',
    '../_base_/models/dinov3_m2f_adapter.py',
    '../_base_/datasets/ade20k_m2f_adapter.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(
        arch=_base_.backbone.arch, init_cfg=_base_.backbone.init_cfg),
    decode_head=dict(in_channels=[_base_.embed_dim] * 4, num_classes=150))
