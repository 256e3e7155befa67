# DINOv2 vitl14_reg4 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth).
embed_dim = 1024
backbone = dict(
    type='DinoVisionTransformer',
    arch='vitl14_reg4',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vitl14_reg4_pretrain.pth'))
