# DINOv3 ViT-S/16 (21M parameters) fine-tuned as EoMT on ADE20K, with
# EoMT's DINOv3 ADE20K 512 semantic recipe (_base_/models/dinov3_eomt.py,
# _base_/schedules/dinov3_eomt_schedule_20k.py,
# _base_/datasets/recipe_eomt.py; docs/eomt_dinov3.md).
# - Queries join the last 3 blocks, as EoMT-S (its DINOv3 COCO config).
# - Mask annealing: EoMT's DINOv3 steps extended to 3 blocks
#   (_base_/models/dinov3_eomt.py).
_base_ = [
    '../_base_/models/dinov3_vits16.py',
    '../_base_/models/dinov3_eomt.py',
    '../_base_/datasets/ade20k_eomt.py',
    '../_base_/schedules/dinov3_eomt_schedule_20k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone),
    decode_head=dict(
        num_classes=150,
        embed_dims=_base_.embed_dim,
        num_blocks=3,
        mask_annealing=_base_.mask_annealing_3_blocks))
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
