# Frozen DINOv2 ViT-g/14 + Mask2Former head.
# This project's recipe, not Meta's: their released ViT-g Mask2Former
# adds a trainable ViT-Adapter (ade20k_vitg14_m2f_official.py).
# - Blocks 9, 19, 29, 39 of 40, evenly spaced and ending at the last
#   (the blocks where Meta's ViT-Adapter taps a ViT-g, scaled to the
#   depth), feed the stride 4/8/16/32 levels of a ViTDet-style simple
#   feature pyramid (256 channels): fine levels get shallower, more local
#   features, the coarse level the last block.
# - mmseg's Mask2Former head: 100 queries, 6 deformable pixel-decoder
#   layers, 9 masked-attention decoder layers, Hungarian matching.
# - Training: 512 crops as the linear recipe; AdamW lr 1e-4, wd 0.05,
#   gradient clipping 0.01 (mmseg's Mask2Former); 1500 warm-up iterations,
#   poly 0.9, 40k iterations at 2 images per GPU x 8, the official heads'
#   budget, since only the neck and head learn.
# - Test: slide 512/341; `tools/test.py --tta` adds scales 0.5-1.75 of
#   (2048, 512) and flips.
_base_ = [
    '_base_/models/dinov2_vitg14.py',
    '_base_/models/dinov2_m2f.py',
    '_base_/datasets/ade20k_m2f.py',
    '_base_/schedules/schedule_m2f_40k.py',
    '_base_/default_runtime.py',
]
num_classes = 150
model = dict(
    backbone=dict(_base_.backbone, out_indices=[9, 19, 29, 39]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
