# Mask2Former on a frozen DINOv2 (not one of Meta's recipes; their only
# Mask2Former is ViT-g + ViT-Adapter, see ade20k_vitg14_m2f_official.py):
# four backbone blocks -> DinoFeaturePyramid (strides 4/8/16/32, 256
# channels) -> mmseg's Mask2Former head (mmdet 3.x: deformable-attention
# pixel decoder, masked-attention transformer decoder, Hungarian matching,
# point-sampled mask losses), with the sizes and loss weights of mmseg's
# mask2former_r50_8xb2-160k_ade20k-512x512 recipe. Slide inference with
# 512 crops and stride 341, as the linear recipe.
# Only the neck and the head learn. Training: 512 crops as the linear
# recipe, with schedules/schedule_m2f_40k.py; test: slide 512/341, and
# `tools/test.py --tta` adds scales 0.5-1.75 of (2048, 512) and flips
# (datasets/recipe_m2f.py).
# Defaults to ViT-S sizes and 150 classes; top-level configs set the
# backbone, its blocks (4 evenly spaced, ending at the last: fine levels
# get shallower, more local features), the neck width and the classes.
_base_ = ['./segmentor.py', './mask2former_losses.py']
# The transformer decoder's self- and cross-attention.
_decoder_attention = dict(
    embed_dims=256,
    num_heads=8,
    attn_drop=0.0,
    proj_drop=0.0,
    dropout_layer=None,
    batch_first=True)
model = dict(
    # Four evenly spaced blocks, one per pyramid level; only the neck and
    # the head learn.
    backbone=dict(
        type='DinoVisionTransformer',
        arch='vits14',
        out_indices=[2, 5, 8, 11],
        frozen=True),
    neck=dict(type='DinoFeaturePyramid', in_channels=384, out_channels=256),
    decode_head=dict(
        # mmseg's Mask2FormerHead whose predict() also works per slide window.
        type='DinoMask2FormerHead',
        in_channels=[256] * 4,
        strides=[4, 8, 16, 32],
        feat_channels=256,
        out_channels=256,
        num_classes=150,
        num_queries=100,
        # The stride 8/16/32 levels feed the decoder's attention; stride 4
        # only the per-pixel mask embedding.
        num_transformer_feat_level=3,
        align_corners=False,
        # The mmdet. prefix: these parts live in mmdet's registries, and
        # mmdet's losses take arguments (avg_factor) that mmseg's do not.
        pixel_decoder=dict(
            type='mmdet.MSDeformAttnPixelDecoder',
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256,
                        num_heads=8,
                        num_levels=3,
                        num_points=4,
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None),
                    ffn_cfg=dict(
                        embed_dims=256,
                        feedforward_channels=1024,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True))),
                init_cfg=None),
            positional_encoding=dict(num_feats=128, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=_decoder_attention,
                cross_attn_cfg=_decoder_attention,
                ffn_cfg=dict(
                    embed_dims=256,
                    feedforward_channels=2048,
                    num_fcs=2,
                    act_cfg=dict(type='ReLU', inplace=True),
                    ffn_drop=0.0,
                    dropout_layer=None,
                    add_identity=True)),
            init_cfg=None),
        **_base_.mask2former_losses))
