# The official *ms* recipe: DinoBNHead on the concatenation of the last four
# blocks, slide inference with 640 crops and stride 320; the multi-scale
# flip test-time augmentation lives in the dataset config (tta_pipeline).
# Defaults to ViT-S sizes; top-level configs set the backbone and widths.
_base_ = ['./dinov2_linear.py']
model = dict(
    data_preprocessor=dict(size=(640, 640)),
    decode_head=dict(in_channels=[384] * 4, in_index=[0, 1, 2, 3]),
    test_cfg=dict(crop_size=(640, 640), stride=(320, 320)))
