# DINOv3 ViT-S/16 (21M parameters) with Meta's released weights,
# dinov3_vits16_pretrain_lvd1689m-08c60483.pth (dinov3/hub/backbones.py
# dinov3_vits16; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 384
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vits16',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vits16_pretrain_'
                    'lvd1689m-08c60483.pth')))
