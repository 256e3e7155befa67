# Frozen DINOv2 ViT-g/14, ms head: BN + 1x1 conv on the last 4
# blocks; multi-scale flip test with `tools/test.py --tta`.
# DINOv2 paper: 53.0 mIoU with --tta.
_base_ = [
    '_base_/models/dinov2_vitg14.py',
    '_base_/models/dinov2_ms.py',
    '_base_/datasets/ade20k_ms.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim] * 4, num_classes=150))
