# DINOv2 ViT-B/14 (4 registers, as EoMT) fine-tuned as EoMT on PASCAL VOC
# 2012, with EoMT's ADE20K 512 semantic recipe (_base_/models/dinov2_eomt.py,
# _base_/schedules/schedule_eomt_40k.py, _base_/datasets/recipe_eomt.py).
# EoMT published no VOC recipe; this is the ADE20K one with 21 classes.
# - Queries join the last 3 blocks, as EoMT-B (COCO).
# - Mask annealing: EoMT's rule (_base_/models/dinov2_eomt.py), as
#   fractions of train_cfg.max_iters.
_base_ = [
    '_base_/models/dinov2_vitb14_reg4.py',
    '_base_/models/dinov2_eomt.py',
    '_base_/datasets/voc2012_eomt.py',
    '_base_/schedules/schedule_eomt_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone),
    decode_head=dict(
        num_classes=21,
        embed_dims=_base_.embed_dim,
        num_blocks=3,
        mask_annealing=dict(
            start_fractions=[1 / 6, 5 / 12, 2 / 3],
            end_fractions=[1 / 3, 7 / 12, 5 / 6])))
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
