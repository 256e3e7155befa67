# DINOv3 ConvNeXt-L (distilled from the 7B) with Meta's released
# weights, dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth
# (dinov3/hub/backbones.py dinov3_convnext_large; downloaded through
# Meta's access form, DINOv3 License), expected in checkpoints/. Hugging
# Face's DINOv3ConvNextModel weights load too (converted on load).
# Meta's linear recipe reads the last stage (stride 32) through the final
# norm: out_indices=[3].
embed_dim = 1536
backbone = dict(
    type='DinoV3ConvNeXt',
    arch='large',
    out_indices=[3],
    init_cfg=dict(
        type='Pretrained',
        checkpoint=('checkpoints/dinov3_convnext_large_pretrain_'
                    'lvd1689m-61fa432d.pth')))
