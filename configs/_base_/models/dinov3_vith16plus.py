# DINOv3 ViT-H+/16 (840M parameters) with Meta's released weights,
# dinov3_vith16plus_pretrain_lvd1689m-7c1da9a5.pth (dinov3/hub/backbones.py
# dinov3_vith16plus; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 1280
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vith16plus',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vith16plus_pretrain_'
                    'lvd1689m-7c1da9a5.pth')))
