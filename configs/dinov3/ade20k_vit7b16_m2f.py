# Frozen DINOv3 ViT-7B/16 + Mask2Former on ADE20K: this project's
# recipe (_base_/models/dinov3_m2f.py), with blocks
# 9, 19, 29 and 39 of 40 feeding the feature pyramid (Meta's even
# intervals).
# 6.7B parameters: about 27 GB of float32 weights on every GPU. Frozen,
# the backbone keeps no gradients, optimiser state or activations for the
# backward pass, so plain DDP (tools/dist_train.sh) trains the neck and
# head, each GPU holding the whole backbone; only training the backbone too
# (frozen=False: about 110 GB of weights, gradients and AdamW state) needs
# sharding (_base_/fsdp.py, docs/sharded_training.md).
_base_ = [
    '../_base_/models/dinov3_vit7b16.py',
    '../_base_/models/dinov3_m2f.py',
    '../_base_/datasets/ade20k_m2f.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
model = dict(
    backbone=dict(_base_.backbone, out_indices=[9, 19, 29, 39]),
    neck=dict(in_channels=_base_.embed_dim),
    decode_head=dict(num_classes=150))
