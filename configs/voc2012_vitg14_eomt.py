# DINOv2 ViT-g/14 (4 registers, as EoMT) fine-tuned as EoMT on PASCAL VOC
# 2012, with EoMT's ADE20K 512 semantic recipe (_base_/models/dinov2_eomt.py,
# _base_/schedules/schedule_eomt_40k.py, _base_/datasets/recipe_eomt.py).
# EoMT published no VOC recipe; this is the ADE20K one with 21 classes.
# - Queries join the last 5 blocks, as EoMT-g (COCO).
# - Mask annealing: EoMT's rule (_base_/models/dinov2_eomt.py), T = 40000.
# - Activation checkpointing of the ViT blocks (with_cp; not in EoMT):
#   bounds the activation memory of the 40 fine-tuned blocks, beside the
#   AdamW moments of 1.1 B parameters (8.5 GiB in float32).
_base_ = [
    '_base_/models/dinov2_vitg14_reg4.py',
    '_base_/models/dinov2_eomt.py',
    '_base_/datasets/voc2012_eomt.py',
    '_base_/schedules/schedule_eomt_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, with_cp=True),
    decode_head=dict(
        num_classes=21,
        embed_dims=_base_.embed_dim,
        num_blocks=5,
        mask_annealing=dict(
            start_iters=[6667, 11667, 16667, 21667, 26667],
            end_iters=[13333, 18333, 23333, 28333, 33333])))
