# DINOv2 ViT-g/14 (4 registers, as EoMT) fine-tuned as EoMT on ADE20K, with
# EoMT's ADE20K 512 semantic recipe (_base_/models/dinov2_eomt.py,
# _base_/schedules/schedule_eomt_40k.py, _base_/datasets/recipe_eomt.py).
# - Queries join the last 5 blocks, as EoMT-g (COCO).
# - Mask annealing: EoMT's rule (_base_/models/dinov2_eomt.py), as
#   fractions of train_cfg.max_iters.
# - Activation checkpointing of the ViT blocks (with_cp; not in EoMT):
#   bounds the activation memory of the 40 fine-tuned blocks, beside the
#   AdamW moments of 1.1 B parameters (8.5 GiB in float32).
_base_ = [
    '_base_/models/dinov2_vitg14_reg4.py',
    '_base_/models/dinov2_eomt.py',
    '_base_/datasets/ade20k_eomt.py',
    '_base_/schedules/schedule_eomt_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, with_cp=True),
    decode_head=dict(
        num_classes=150,
        embed_dims=_base_.embed_dim,
        num_blocks=5,
        mask_annealing=dict(
            start_fractions=[1 / 6, 7 / 24, 5 / 12, 13 / 24, 2 / 3],
            end_fractions=[1 / 3, 11 / 24, 7 / 12, 17 / 24, 5 / 6])))
custom_hooks = [*_base_.custom_hooks, _base_.mask_annealing_hook]
