# DINOv3 ViT-7B/16 (6.7B parameters) with Meta's released weights,
# dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth (dinov3/hub/backbones.py
# dinov3_vit7b16; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 4096
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vit7b16',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vit7b16_pretrain_'
                    'lvd1689m-a955f4ea.pth')))
