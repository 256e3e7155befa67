# ade20k_vit7b16_eomt.py trained sharded (FSDP, _base_/fsdp.py;
# docs/sharded_training.md): fine-tuning all 6.7B parameters with AdamW
# needs about 16 bytes a parameter, about 110 GB, before activations, which
# no single GPU holds, so plain DDP cannot train it. Launch one process per
# GPU:
#   tools/dist_train.sh configs/dinov3/ade20k_vit7b16_eomt_fsdp.py 8
_base_ = ['./ade20k_vit7b16_eomt.py', '../_base_/fsdp.py']
# The strategy recomputes every block in the backward pass itself; the
# backbone's own with_cp would checkpoint each block a second time.
model = dict(backbone=dict(with_cp=False))
