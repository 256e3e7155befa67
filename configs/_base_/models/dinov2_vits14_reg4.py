# DINOv2 vits14_reg4 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth).
embed_dim = 384
backbone = dict(
    type='DinoVisionTransformer',
    arch='vits14_reg4',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vits14_reg4_pretrain.pth'))
