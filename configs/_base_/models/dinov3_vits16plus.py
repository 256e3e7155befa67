# DINOv3 ViT-S+/16 (29M parameters) with Meta's released weights,
# dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth (dinov3/hub/backbones.py
# dinov3_vits16plus; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 384
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vits16plus',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vits16plus_pretrain_'
                    'lvd1689m-4057cbaa.pth')))
