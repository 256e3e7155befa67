# DINOv3 ViT-L/16 (300M parameters) with Meta's released weights,
# dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth (dinov3/hub/backbones.py
# dinov3_vitl16; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 1024
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vitl16',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vitl16_pretrain_'
                    'lvd1689m-8aa4cbdd.pth')))
