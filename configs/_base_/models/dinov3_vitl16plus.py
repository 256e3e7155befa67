# DINOv3 ViT-L+/16 with Meta's released weights,
# dinov3_vitl16plus_pretrain_lvd1689m-46503df0.pth (dinov3/hub/backbones.py
# dinov3_vitl16plus; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 1024
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vitl16plus',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vitl16plus_pretrain_'
                    'lvd1689m-46503df0.pth')))
