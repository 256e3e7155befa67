# DINOv2 vitg14 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth).
embed_dim = 1536
backbone = dict(
    type='DinoVisionTransformer',
    arch='vitg14',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vitg14_pretrain.pth'))
