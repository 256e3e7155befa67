# Frozen DINOv3 ViT + Meta's DINOv3 adapter + Mask2Former, at the widths of
# Meta's released DINOv3 Mask2Former (dinov3/eval/segmentation/models:
# build_segmentation_decoder(decoder_type='m2f'), Mask2FormerHead,
# MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder):
# - backbone: DinoV3Adapter (the ViT frozen, four blocks by Meta's rule for
#   the depth, extractor-only stages, pyramid at strides 4/8/16/32 of the
#   ViT width);
# - pixel decoder: 1x1 conv + GroupNorm(32) projections of the stride 32,
#   16 and 8 levels into 6 post-norm deformable-attention encoder layers
#   (16 heads, 4 points, 3 levels, FFN 4096), then one FPN level at stride
#   4; mmdet's MSDeformAttnPixelDecoder with num_outs=3 computes exactly
#   that (Meta's input_shape gives every level stride 4, so its stable
#   sort keeps the adapter's order and its [::-1][:-1] picks the same three
#   levels);
# - decoder: 9 post-norm layers, cross-attention (masked, threshold 0.5),
#   self-attention, FFN 4096, 16 heads, 100 queries, hidden 2048, sine
#   positions of 1024 features per axis, normalised: mmdet's Mask2Former
#   decoder as mmseg's Mask2FormerHead builds it.
# Semantic maps: mask logits resized to the window, then sigmoid and the
# class-weighted sum (combine_at='window', Meta's DINOv3 order).
# Top-level configs set the arch, the head's in_channels (the ViT width),
# the classes and the backbone file.
_base_ = ['./segmentor.py', './mask2former_losses.py']
hidden_dim = 2048  # (shape) Meta's hidden_dim: pixel decoder and decoder
ffn_dim = 4096  # (shape) FFN width of the encoder and decoder layers
num_heads = 16  # (not in the file) encoder and decoder attention heads
_attention = dict(
    embed_dims=hidden_dim,
    num_heads=num_heads,
    attn_drop=0.0,
    proj_drop=0.0,
    dropout_layer=None,
    batch_first=True)
_ffn = dict(
    embed_dims=hidden_dim,
    feedforward_channels=ffn_dim,
    num_fcs=2,
    act_cfg=dict(type='ReLU', inplace=True),
    ffn_drop=0.0,
    dropout_layer=None,
    add_identity=True)
model = dict(
    backbone=dict(
        type='DinoV3Adapter',
        arch='vit7b16',
        interaction_indexes=None,  # Meta's rule for the depth
        deform_num_heads=16,  # (not in the file) heads x points: (shape)
        num_points=4,  # (not in the file)
        deform_ratio=0.5,  # (shape) value width embed_dim / 2
        cffn_ratio=0.25,  # (shape)
        conv_inplane=64,  # (shape)
        extra_extractors=True,  # (shape)
        add_vit_feature=True,  # (not in the file)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        drop_path_rate=0.3),  # training only
    neck=None,
    decode_head=dict(
        type='DinoMask2FormerHead',
        in_channels=[4096] * 4,  # the ViT width (7B); set with the arch
        strides=[4, 8, 16, 32],
        feat_channels=hidden_dim,
        out_channels=hidden_dim,  # Meta's mask_dim
        num_classes=150,
        num_queries=100,  # (shape)
        num_transformer_feat_level=3,
        align_corners=False,
        combine_at='window',
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,  # (shape)
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=hidden_dim,
                        num_heads=num_heads,
                        num_levels=3,
                        num_points=4,
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None),
                    ffn_cfg=dict(
                        embed_dims=hidden_dim,
                        feedforward_channels=ffn_dim,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(
                num_feats=hidden_dim // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=hidden_dim // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,  # (shape)
            layer_cfg=dict(
                self_attn_cfg=_attention,
                cross_attn_cfg=_attention,
                ffn_cfg=_ffn),
            init_cfg=None),
        **_base_.mask2former_losses))
