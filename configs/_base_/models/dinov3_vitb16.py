# DINOv3 ViT-B/16 (86M parameters) with Meta's released weights,
# dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth (dinov3/hub/backbones.py
# dinov3_vitb16; downloaded through Meta's access form, DINOv3 License),
# expected in checkpoints/.
embed_dim = 768
backbone = dict(
    type='DinoV3VisionTransformer',
    arch='vitb16',
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_vitb16_pretrain_'
                    'lvd1689m-73cec8be.pth')))
