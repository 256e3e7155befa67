# DINOv2 vitl14 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth).
embed_dim = 1024
backbone = dict(
    type='DinoVisionTransformer',
    arch='vitl14',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vitl14_pretrain.pth'))
