# EoMT's released ADE20K semantic model, EoMT-L 512 (tue-mps/eomt model
# zoo: 58.4 mIoU; file ade20k_semantic_eomt_large_512.bin in the
# catalogue, Hugging Face tue-mps/ade20k_semantic_eomt_large_512), loaded
# as published: the file is converted on load and checked strictly
# (dinov2_seg/checkpoints/eomt.py).
# - EoMT re-creates the DINOv2 ViT-L/14 with registers at patch size 16
#   for 512 x 512 inputs (timm resamples the weights): a 16 x 16 patch
#   embedding and a 32 x 32 position grid, both held by the file (not by
#   Meta's backbone file, hence no init_cfg).
# - Test as EoMT's evaluation (window_imgs_semantic and
#   revert_window_logits_semantic of its training/lightning_module.py):
#   - the short side resized to 512 whatever the aspect (the long side is
#     never capped), with PIL's bilinear filter, which averages over the
#     whole footprint when shrinking (antialiased); mmcv's default OpenCV
#     bilinear reads 2 x 2 pixels, with which (issue 15's measurement)
#     about 20% of the pixels of a resized image differ by a grey level
#     and ~0.6% of the predicted labels change. mmcv's pillow backend
#     makes the same PIL call; the size is int(x + 0.5) where EoMT rounds
#     half to even, which differs only when the long side scales to
#     exactly k + 0.5 pixels (a 1024-pixel short side and an odd long
#     side, for instance);
#   - ceil(long / 512) windows of 512 spread evenly along the long side
#     (window_rule='spread'; mmseg's stride 341 gives the same windows
#     only up to aspect 5:3), averaged where they overlap, the average
#     resized bilinearly to the original image;
#   - each query's mask logits upsampled to the window before the sigmoid
#     (resize_masks_first).
#   The multi-scale flip test (--tta) stays the Mask2Former recipe's.
# Training settings are those of ade20k_vitl14_eomt.py.
_base_ = ['./ade20k_vitl14_eomt.py']
model = dict(
    backbone=dict(patch_size=16, img_size=512, init_cfg=None),
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
