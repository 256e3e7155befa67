# Meta's DINOv3 adapter + Mask2Former on ViT-L/16 (dinov3/hub/segmentors.py
# builds it for dinov3_vitl16; Meta has released weights for the 7B only),
# for a head file trained with Meta's code:
#   python tools/test.py configs/dinov3/ade20k_vitl16_m2f_official.py \
#       HEAD_FILE --tta
# The ViT comes from checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth
# (model.backbone.init_cfg); the adapter reads blocks [4, 11, 17, 23].
# Everything else as ade20k_vit7b16_m2f_official.py.
_base_ = ['./ade20k_vit7b16_m2f_official.py']
_vitl16 = dict(
    type='Pretrained',
    checkpoint='checkpoints/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth')
model = dict(
    backbone=dict(arch='vitl16', init_cfg=_vitl16),
    decode_head=dict(in_channels=[1024] * 4),
    # The 300M ViT leaves room for batched windows (None: 8 on a GPU).
    test_cfg=dict(window_batch_size=None))
