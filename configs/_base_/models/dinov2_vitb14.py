# DINOv2 vitb14 backbone with Meta's released weights
# (https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth).
embed_dim = 768
backbone = dict(
    type='DinoVisionTransformer',
    arch='vitb14',
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dinov2_vitb14_pretrain.pth'))
