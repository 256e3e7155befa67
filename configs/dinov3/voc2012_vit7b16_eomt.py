# DINOv3 ViT-7B/16 (6.7B parameters) fine-tuned as EoMT on
# PASCAL VOC 2012, with
# EoMT's DINOv3 ADE20K 512 semantic recipe (_base_/models/dinov3_eomt.py,
# _base_/schedules/dinov3_eomt_schedule_20k.py,
# _base_/datasets/recipe_eomt.py; docs/eomt_dinov3.md).
# EoMT published no VOC recipe; this is the ADE20K one with 21 classes.
# - Queries join the last 5 blocks, as EoMT's ViT-g (no EoMT config).
# - Mask annealing: EoMT's DINOv3 steps extended to 5 blocks
#   (_base_/models/dinov3_eomt.py).
# - Activation checkpointing of the ViT blocks (with_cp; not in EoMT):
#   bounds the activation memory of the fine-tuned blocks.
_base_ = [
    '../_base_/models/dinov3_vit7b16.py',
    '../_base_/models/dinov3_eomt.py',
    '../_base_/datasets/voc2012_eomt.py',
    '../_base_/schedules/dinov3_eomt_schedule_20k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, with_cp=True),
    decode_head=dict(
        num_classes=21,
        embed_dims=_base_.embed_dim,
        num_blocks=5,
        mask_annealing=_base_.mask_annealing_5_blocks))
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
