# DINOv2 vits14 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth).
embed_dim = 384
backbone = dict(
    type='DinoVisionTransformer',
    arch='vits14',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vits14_pretrain.pth'))
