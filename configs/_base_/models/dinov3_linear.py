# Meta's DINOv3 *linear* recipe (dinov3/eval/segmentation,
# config-ade20k-linear-training.yaml), model part: the frozen backbone's
# last layer only ("backbone_out_layers: LAST"), through the backbone's
# final norm ("use_backbone_norm: True"), then BatchNorm + 1x1 conv
# ("use_batchnorm: True", no class token) with dropout 0.1 (Meta's
# DecoderConfig default, which the yaml keeps); slide inference with 512
# windows at stride 341 (segmentor.py). Top-level configs set the backbone
# (_base_/models/dinov3_<arch>.py) and the widths.
# One difference in training only: Meta's LinearHead applies Dropout2d
# before the BatchNorm, mmseg's head (as the DINOv2 recipe) after it, just
# before the 1x1 conv.
_base_ = ['./segmentor.py']
model = dict(
    backbone=dict(
        type='DinoV3VisionTransformer', arch='vits16', out_indices=[-1]),
    decode_head=dict(
        type='DinoBNHead',
        in_channels=[384],
        # The backbone returns the last layer only.
        in_index=[0],
        input_transform='resize_concat',
        dropout_ratio=0.1,
        num_classes=150,
        # Meta's nn.SyncBatchNorm.
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        # "celoss_weight: 1.0, diceloss_weight: 0.0"
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
