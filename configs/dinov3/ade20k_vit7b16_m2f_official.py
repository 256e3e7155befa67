# Meta's released DINOv3 ViT-7B/16 + adapter + Mask2Former for ADE20K
# (dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth, hub dinov3_vit7b16_ms),
# loaded as published, with Meta's test (config-ade20k-m2f-inference.yaml):
#   python tools/test.py configs/dinov3/ade20k_vit7b16_m2f_official.py \
#       checkpoints/dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth --tta
# The head file holds the adapter and the Mask2Former, not the ViT: that
# comes from the backbone file named in model.backbone.init_cfg
# (checkpoints/dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth, or
# --cfg-options model.backbone.init_cfg.checkpoint=FILE). Both load
# strictly (every tensor, every shape); both are gated (DINOv3 License).
# Settings marked "(shape)" in _base_/models/dinov3_m2f_adapter.py are
# fixed by the file: a wrong value is a load error naming the tensor.
_base_ = [
    '../_base_/models/dinov3_vit7b16.py',
    '../_base_/models/dinov3_m2f_adapter.py',
    '../_base_/datasets/dinov3_ade20k_linear.py',
    '../_base_/schedules/schedule_m2f_40k.py',
    '../_base_/default_runtime.py',
]
crop_size = (896, 896)
test_side = 896  # Meta's eval img_size: the short side (long side free)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=_base_.backbone.arch, init_cfg=_base_.backbone.init_cfg),
    decode_head=dict(in_channels=[_base_.embed_dim] * 4, num_classes=150),
    # Meta's slide test: 896 windows at stride 596, each window's class
    # probabilities averaged where windows overlap; an image smaller than
    # 896 on both sides (TTA ratios below 1, near-square images) gets
    # square windows of its short side ('stride_square', as Meta's
    # slide_inference). One window per backbone call: the 7B is 27 GB of
    # float32 weights.
    test_cfg=dict(
        crop_size=crop_size,
        stride=(596, 596),
        window_rule='stride_square',
        window_batch_size=1))

# Meta's FixedSideResize: short side 896, long side int(896 * ratio +
# 0.5), with PIL's bilinear filter (torchvision on a PIL image); labels
# stay at the original resolution, where mIoU is computed.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1_000_000, test_side), **_base_.pil_resize),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# `tools/test.py --tta` (Meta's "use_tta: True"): short sides
# int(896 * ratio) for ratios 0.9-1.1, rounded up to a multiple of 32 below
# ratio 1 (832, 864, 896, 940, 985), each with and without a horizontal
# flip; the softmax of every view's class probabilities, at the original
# resolution, is averaged (BatchedSegTTAModel, as Meta's eval.py).
tta_ratios = [0.9, 0.95, 1.0, 1.05, 1.1]
tta_short_sides = [
    -(-int(test_side * r) // 32) * 32 if r < 1 else int(test_side * r)
    for r in tta_ratios
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(type='Resize', scale=(1_000_000, side), **_base_.pil_resize)
            for side in tta_short_sides
        ], *_base_.tta_flip_stages])
]
# Meta released no Mask2Former training recipe; for fine-tuning the
# adapter and head: Meta's DINOv3 linear recipe's augmentations at 896.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(1_000_000, test_side),
        ratio_range=(0.5, 2.0),
        **_base_.pil_resize),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion', hue_delta=90),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
