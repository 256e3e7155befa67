# Frozen DINOv2 ViT-B/14, ms head: BN + 1x1 conv on the last 4
# blocks; multi-scale flip test with `tools/test.py --tta`.
_base_ = [
    '_base_/models/dinov2_vitb14.py',
    '_base_/models/dinov2_ms.py',
    '_base_/datasets/voc2012_ms.py',
    '_base_/schedules/schedule_40k.py',
    '_base_/default_runtime.py',
]
model = dict(
    backbone=_base_.backbone,
    decode_head=dict(in_channels=[_base_.embed_dim] * 4, num_classes=21))
