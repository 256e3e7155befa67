# DINOv2 vitb14_reg4 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth).
embed_dim = 768
backbone = dict(
    type='DinoVisionTransformer',
    arch='vitb14_reg4',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vitb14_reg4_pretrain.pth'))
