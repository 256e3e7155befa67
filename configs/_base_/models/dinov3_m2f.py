# Mask2Former on a frozen DINOv3 ViT: the DINOv2 recipe of dinov2_m2f.py
# (DinoFeaturePyramid -> mmseg's Mask2Former head, mmseg's sizes and loss
# weights, slide 512/341) with the backbone swapped. Not one of Meta's
# recipes: Meta's DINOv3 Mask2Former (ViT-7B + DINOv3_Adapter, inference
# only) is what *_m2f_official.py loads.
# - Blocks: four, at Meta's even intervals (dinov3/eval/segmentation/
#   models/__init__.py, FOUR_EVEN_INTERVALS, which its Mask2Former adapter
#   reads): [4, 11, 17, 23] for 24 blocks (the paper's choice), otherwise
#   the last block of each quarter, i * (depth // 4) - 1. Top-level configs
#   set them per size.
# - Final norm on every returned map, as dinov2_m2f.py (DINOv2's
#   get_intermediate_layers norms them); Meta's adapter reads the blocks
#   un-normed, but it also adds its own spatial-prior branch and norms.
# - Patch 16: the pyramid's maps already lie on the stride-16 grid (no
#   resampling, unlike DINOv2's 14), and the 512 training and slide crops
#   are 32 x 32 patches, so the four levels are exactly crop/4 to crop/32.
# Defaults to ViT-S/16 sizes and 150 classes; top-level configs set the
# backbone, its blocks, the neck width and the classes.
_base_ = ['./dinov2_m2f.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='DinoV3VisionTransformer',
        arch='vits16',
        out_indices=[2, 5, 8, 11],
        final_norm=True,
        frozen=True),
    neck=dict(in_channels=384, patch_size=16))
