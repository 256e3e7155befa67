# EoMT's released DINOv3 ADE20K semantic model, EoMT-L 512 (tue-mps/eomt
# model_zoo/dinov3.md: 59.5 mIoU, configs/dinov3/ade20k/semantic/
# eomt_large_512.yaml; Hugging Face tue-mps/ade_semantic_eomt_large_512_dinov3,
# pytorch_model.bin), loaded as published: the file holds differences to
# Meta's ViT-L/16 backbone file, which EoMT may not redistribute, so the
# test takes both, the deltas as the checkpoint and Meta's
# dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth from model.backbone.init_cfg
# (dinov2_seg/checkpoints/eomt_delta.py adds them, both checked strictly;
# docs/eomt_dinov3.md). EoMT's only DINOv3 semantic release; its other
# DINOv3 files are COCO panoptic and instance models.
# - Test as EoMT's evaluation (the same training/lightning_module.py as its
#   DINOv2 models; see ../ade20k_vitl14_eomt_official.py for the details):
#   the short side resized to 512 with PIL's antialiased bilinear filter,
#   ceil(long / 512) windows of 512 spread evenly along the long side and
#   averaged where they overlap, each query's mask logits upsampled to the
#   window before the sigmoid, ground truth at the original resolution.
#   DINOv3's RoPE needs no position grid for the 512 windows.
#   The multi-scale flip test (--tta) stays the Mask2Former recipe's.
# Training settings are those of ade20k_vitl16_eomt.py.
_base_ = ['./ade20k_vitl16_eomt.py']
model = dict(
    decode_head=dict(resize_masks_first=True),
    test_cfg=dict(window_rule='spread'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(1_000_000, 512),
        keep_ratio=True,
        interpolation='bilinear',
        backend='pillow'),
    # Ground truth at the original resolution, as EoMT evaluates.
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
