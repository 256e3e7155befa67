# EoMT's released ADE20K semantic model, EoMT-L 512 (tue-mps/eomt model
# zoo: 58.4 mIoU; file ade20k_semantic_eomt_large_512.bin in the
# catalogue, Hugging Face tue-mps/ade20k_semantic_eomt_large_512), loaded
# as published: the file is converted on load and checked strictly
# (dinov2_seg/checkpoints/eomt.py).
# - EoMT re-creates the DINOv2 ViT-L/14 with registers at patch size 16
#   for 512 x 512 inputs (timm resamples the weights): a 16 x 16 patch
#   embedding and a 32 x 32 position grid, both held by the file (not by
#   Meta's backbone file, hence no init_cfg).
# - Test as EoMT's evaluation: each query's mask logits are upsampled to
#   the window before the sigmoid (resize_masks_first).
# Training settings are those of ade20k_vitl14_eomt.py.
_base_ = ['./ade20k_vitl14_eomt.py']
model = dict(
    backbone=dict(patch_size=16, img_size=512, init_cfg=None),
    decode_head=dict(resize_masks_first=True))
