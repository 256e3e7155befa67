"""DinoV3VisionTransformer: Meta's hub archs and file layout, features equal
to an independent plain-torch reference written from Meta's formulas, and
the behaviour the segmentation code relies on (output format, freezing,
RoPE augmentations off unless asked for)."""
import copy
import math

import pytest
import torch
from helpers.dinov3_meta import (HUB_ARCHS, PARAMETER_MILLIONS,
                                 fabricate_meta_file, fabricate_meta_state,
                                 meta_manifest)
from helpers.dinov3_reference import reference_tokens
from helpers.tools import REPO
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinov2_seg.checkpoints import describe_arch, load_backbone_state_dict
from dinov2_seg.models.backbones import (DINOV3_ARCH_SETTINGS,
                                         DinoV3VisionTransformer)
from dinov2_seg.models.backbones.dinov3_layers import apply_rope


def small(arch: str, depth: int = 2) -> dict:
    return dict(DINOV3_ARCH_SETTINGS[arch], depth=depth)


# 48 channels, 4 heads (head dim 12: 3 periods per axis), 3 blocks.
TINY = dict(embed_dim=48, depth=3, num_heads=4)


def x_70_100(seed=0):
    """A batch of 2 whose sides are not multiples of 16 (grid 4 x 6)."""
    return torch.randn(
        2, 3, 70, 100, generator=torch.Generator().manual_seed(seed))


def loaded(arch, path, **kwargs) -> DinoV3VisionTransformer:
    model = DinoV3VisionTransformer(
        arch=arch,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)),
        **kwargs)
    model.init_weights()
    return model


def test_presets_are_metas_hub_archs():
    assert set(DINOV3_ARCH_SETTINGS) == set(HUB_ARCHS)
    for name, settings in DINOV3_ARCH_SETTINGS.items():
        dim, depth, heads, ffn, _, qkv_bias, local = HUB_ARCHS[name]
        assert (settings['embed_dim'], settings['depth'],
                settings['num_heads'], settings['ffn'], settings['qkv_bias'],
                settings['local_cls_norm']) == (dim, depth, heads, ffn,
                                                qkv_bias, local), name
        assert settings['num_storage_tokens'] == 4
        assert settings['rope_base'] == 100
        assert not settings['untie_cls_norm']


@pytest.mark.parametrize('arch', sorted(HUB_ARCHS))
def test_preset_has_metas_keys_and_shapes(arch):
    """Built on the meta device (the 7B included): exactly the tensors of
    Meta's file, and a file of those shapes loads strictly."""
    with torch.device('meta'):
        model = DinoV3VisionTransformer(arch=arch)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == meta_manifest(arch)
    if arch in PARAMETER_MILLIONS:
        count = sum(p.numel() for p in model.parameters())
        assert count / 1e6 == pytest.approx(PARAMETER_MILLIONS[arch], abs=0.01)
    state = fabricate_meta_state(arch, device='meta')
    load_backbone_state_dict(model, state, f'dinov3_{arch}.pth')
    assert describe_arch(state) == arch


@pytest.mark.parametrize('arch', ['vits16', 'vits16plus'])
def test_meta_file_gives_reference_tokens(tmp_path, arch):
    """MLP and SwiGLU archs at reduced depth, a 70 x 100 batch of 2: the
    class token and patch tokens of every block equal the reference's."""
    path = tmp_path / f'dinov3_{arch}_pretrain_lvd1689m-00000000.pth'
    state = fabricate_meta_file(arch, path, depth=2)
    model = loaded(small(arch), path, out_indices=[0, 1])
    x = x_70_100()
    with torch.no_grad():
        tokens, grid = model.intermediate_tokens(x)
        feats = model(x)
    want = reference_tokens(state, x, 6, [0, 1])
    assert grid == (4, 6)
    for got, ref, feat in zip(tokens, want, feats):
        assert got.shape == (2, 5 + 24, 384)
        torch.testing.assert_close(got[:, 0], ref[:, 0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        # The forward format: patch tokens only, as (B, C, h, w) maps.
        assert feat.shape == (2, 384, 4, 6)
        torch.testing.assert_close(
            feat,
            ref[:, 5:].reshape(2, 4, 6, 384).permute(0, 3, 1, 2),
            atol=1e-4,
            rtol=1e-4)


def test_key_bias_is_masked(tmp_path):
    """The file's key third of the qkv bias is random; it must not count."""
    state = fabricate_meta_state('vits16', depth=1)
    model = DinoV3VisionTransformer(arch=small('vits16', 1))
    model.load_state_dict(state)
    x = x_70_100()
    with torch.no_grad():
        before = model(x)[0]
        model.blocks[0].attn.qkv.bias[384:768] = 5.0
        after = model(x)[0]
        model.blocks[0].attn.qkv.bias[:384] += 1.0  # the query's does count
        changed = model(x)[0]
    torch.testing.assert_close(before, after)
    assert (changed - before).abs().max() > 1e-3


def test_rope_rotates_patches_by_cell_centre_per_axis():
    model = DinoV3VisionTransformer(arch=TINY)
    coords = model.rope_embed.coordinates((2, 4))
    assert coords.dtype == torch.float32
    torch.testing.assert_close(
        coords,
        torch.tensor([[-0.5, -0.75], [-0.5, -0.25], [-0.5, 0.25], [-0.5, 0.75],
                      [0.5, -0.75], [0.5, -0.25], [0.5, 0.25], [0.5, 0.75]]))
    sin, cos = model.rope_embed((2, 4))
    assert sin.shape == cos.shape == (8, 12)
    periods = 100**(torch.arange(3) / 3)
    want = 2 * math.pi * torch.cat([-0.5 / periods, -0.75 / periods])
    torch.testing.assert_close(sin[0], want.repeat(2).sin())


def test_only_patch_tokens_are_rotated():
    """RoPE leaves the class and storage tokens in front as they are and
    rotates each patch's channel pairs (i, i + head_dim / 2)."""
    model = DinoV3VisionTransformer(arch=TINY)
    sin, cos = model.rope_embed((2, 4))
    q = torch.randn(2, 4, 5 + 8, 12)
    rotated = apply_rope(q, (sin, cos))
    torch.testing.assert_close(rotated[:, :, :5], q[:, :, :5], rtol=0, atol=0)
    first, second = q[:, :, 5:, :6], q[:, :, 5:, 6:]
    torch.testing.assert_close(rotated[:, :, 5:, :6],
                               first * cos[:, :6] - second * sin[:, :6])
    torch.testing.assert_close(rotated[:, :, 5:, 6:],
                               second * cos[:, 6:] + first * sin[:, 6:])


def test_forward_format_and_out_indices():
    model = DinoV3VisionTransformer(
        arch=dict(TINY, depth=6), out_indices=[1, -1])
    assert model.out_indices == (1, 5)
    feats = model(x_70_100())
    assert isinstance(feats, tuple)
    assert [f.shape for f in feats] == [(2, 48, 4, 6)] * 2
    assert all(f.is_contiguous() for f in feats)
    with pytest.raises(ValueError, match='out of range for a 6-block'):
        DinoV3VisionTransformer(arch=dict(TINY, depth=6), out_indices=[6])
    # Default: the last four blocks.
    assert DinoV3VisionTransformer(arch=dict(TINY, depth=6)).out_indices == (2,
                                                                             3,
                                                                             4,
                                                                             5)


def test_final_norm_switch(tmp_path):
    state = fabricate_meta_state('vits16', depth=1)
    model = DinoV3VisionTransformer(
        arch=small('vits16', 1), out_indices=[0], final_norm=False)
    model.load_state_dict(state)
    x = x_70_100()
    with torch.no_grad():
        raw = model(x)[0]
        model.final_norm = True
        normed = model(x)[0]
    assert (raw - normed).abs().max() > 0.1
    torch.testing.assert_close(
        model.norm(raw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), normed)


def test_untied_class_norm_applies_to_prefix_only():
    model = DinoV3VisionTransformer(arch=dict(TINY, untie_cls_norm=True))
    assert 'cls_norm.weight' in model.state_dict()
    with torch.no_grad():
        model.cls_norm.weight.fill_(3.0)
        tokens, _ = model.intermediate_tokens(x_70_100())
        plain = DinoV3VisionTransformer(arch=TINY)
        plain.load_state_dict({
            k: v
            for k, v in model.state_dict().items()
            if not k.startswith('cls_norm.')
        })
        want, _ = plain.intermediate_tokens(x_70_100())
    torch.testing.assert_close(tokens[-1][:, 5:], want[-1][:, 5:])
    torch.testing.assert_close(tokens[-1][:, :5], 3 * want[-1][:, :5])


def test_frozen_by_default_and_no_augmentation_in_train_mode():
    model = DinoV3VisionTransformer(
        arch=TINY, rope_train_augment=dict(rescale=2.0, shift=0.5))
    assert not any(p.requires_grad for p in model.parameters())
    model.train()  # what mmengine's runner does to the whole segmentor
    assert not model.training and not model.rope_embed.training
    x = x_70_100()
    first, second = model(x), model(x)
    assert first[0].grad_fn is None
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_augmentation_is_off_by_default_when_fine_tuning():
    model = DinoV3VisionTransformer(arch=TINY, frozen=False)
    model.train()
    assert model.training and model.rope_embed.training
    x = x_70_100()
    torch.testing.assert_close(model(x)[-1], model(x)[-1], rtol=0, atol=0)


def test_augmentation_when_asked_for_and_fine_tuning():
    model = DinoV3VisionTransformer(
        arch=TINY,
        frozen=False,
        layer_scale_init=1.0,  # Meta's 1e-5 hides the blocks at random init
        rope_train_augment=dict(rescale=2.0))
    with torch.no_grad():  # sharper attention: positions matter more
        for block in model.blocks:
            block.attn.qkv.weight.mul_(25)
    x = x_70_100()
    model.eval()
    with torch.no_grad():
        clean = model(x)[-1]
    model.train()
    torch.manual_seed(0)
    augmented = model(x)[-1]
    assert (augmented - clean).abs().max() > 1e-2
    coords = model.rope_embed.coordinates((2, 4))
    scale = coords[0, 0] / -0.5  # one log-uniform factor in [1/2, 2]
    assert 0.5 <= scale <= 2
    torch.testing.assert_close(
        coords,
        scale *
        torch.tensor([[-0.5, -0.75], [-0.5, -0.25], [-0.5, 0.25], [-0.5, 0.75],
                      [0.5, -0.75], [0.5, -0.25], [0.5, 0.25], [0.5, 0.75]]))
    with pytest.raises(KeyError, match="Unknown RoPE augmentation.*'zoom'"):
        DinoV3VisionTransformer(arch=TINY, rope_train_augment=dict(zoom=2))


def test_fine_tuning_and_activation_checkpointing_agree():
    torch.manual_seed(0)
    plain = DinoV3VisionTransformer(
        arch=TINY, frozen=False, drop_path_rate=0.0).train()
    checkpointed = DinoV3VisionTransformer(
        arch=TINY, frozen=False, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert 'blocks.1.attn.qkv.weight' in trainable
    assert 'mask_token' not in trainable  # unused for segmentation
    x = x_70_100()
    for model in (plain, checkpointed):
        model(x)[-1].square().sum().backward()
    torch.testing.assert_close(plain.blocks[0].attn.qkv.weight.grad,
                               checkpointed.blocks[0].attn.qkv.weight.grad)


def test_rope_stays_float32_in_bfloat16():
    model = DinoV3VisionTransformer(arch=TINY).to(torch.bfloat16)
    assert model.rope_embed.periods.dtype == torch.float32
    torch.testing.assert_close(model.rope_embed.periods,
                               100**(torch.arange(3) / 3))
    feats = model(x_70_100().to(torch.bfloat16))
    assert feats[0].dtype == torch.bfloat16


def test_wrong_arch_error_names_file_arch_and_keys(tmp_path):
    path = tmp_path / 'dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth'
    fabricate_meta_file('vits16plus', path, depth=2)
    with pytest.raises(ValueError) as error:
        loaded(small('vits16'), path)
    message = str(error.value)
    assert str(path) in message
    assert "DinoV3VisionTransformer(arch='custom')" in message
    assert 'blocks.0.mlp.w1.weight' in message  # unexpected
    assert 'blocks.0.mlp.fc1.weight' in message  # missing
    assert "closest 'vits16plus': depth=2" in message


def test_satellite_vitl16_file_is_named():
    state = fabricate_meta_state('vitl16_sat493m', device='meta')
    with torch.device('meta'):
        model = DinoV3VisionTransformer(arch='vitl16')
    with pytest.raises(ValueError) as error:
        load_backbone_state_dict(model, state, 'sat.pth')
    assert "look like arch 'vitl16_sat493m'" in str(error.value)
    assert 'local_cls_norm.weight' in str(error.value)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(KeyError, match="Unknown DINOv3 arch 'vitx16'"):
        DinoV3VisionTransformer(arch='vitx16')
    with pytest.raises(KeyError, match=r'lacks \[.+num_heads.+\]'):
        DinoV3VisionTransformer(arch=dict(embed_dim=48, depth=1))


def test_random_init_warns_about_gated_weights():
    model = DinoV3VisionTransformer(arch=TINY)
    with pytest.warns(
            UserWarning, match='randomly initialised.*DINOv3 '
            'License'):
        model.init_weights()


def test_segmentor_fast_slide_equals_stock():
    """In the ms recipe's BatchedEncoderDecoder (four blocks into
    DinoBNHead), the batched slide inference gives mmseg's stock result:
    the backbone's output format is DINOv2's."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_ms.py'))
    cfg.model.backbone = dict(
        type='DinoV3VisionTransformer',
        arch=dict(TINY, depth=4),
        layer_scale_init=1.0,
        init_cfg=None)
    cfg.model.decode_head.in_channels = [48] * 4
    cfg.model.decode_head.norm_cfg = dict(type='BN')
    cfg.model.test_cfg.update(crop_size=(112, 112), stride=(56, 56))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    torch.nn.init.normal_(model.decode_head.conv_seg.weight, std=1.0)
    inputs = torch.randn(1, 3, 97, 131)
    meta = dict(ori_shape=(97, 131), img_shape=(97, 131))
    logits = {}
    for fast in (True, False):
        model.test_cfg.fast_inference = fast
        with torch.no_grad():
            out = model.predict(inputs.clone(),
                                [SegDataSample(metainfo=copy.deepcopy(meta))])
        logits[fast] = out[0].seg_logits.data
    assert logits[True].shape == (150, 97, 131)
    torch.testing.assert_close(logits[True], logits[False], rtol=0, atol=5e-4)


def test_forward_block_as_dinov2s_for_eomt():
    """EoMT calls ``prepare_tokens`` then ``forward_block(index, tokens,
    attn_mask)``: the blocks then use the grid's RoPE tables."""
    model = DinoV3VisionTransformer(arch=TINY, layer_scale_init=1.0)
    x = x_70_100()
    with pytest.raises(RuntimeError, match='call prepare_tokens first'):
        model.forward_block(0, torch.zeros(2, 29, 48))
    with torch.no_grad():
        want = model.intermediate_tokens(x)[0][-1]
        tokens, grid = model.prepare_tokens(x)
        everyone = torch.ones(2, 29, 29, dtype=torch.bool)
        for index in range(len(model.blocks)):
            tokens = model.forward_block(index, tokens, everyone)
    assert grid == (4, 6)
    torch.testing.assert_close(model.norm(tokens), want)


def test_layer_decay_gives_the_storage_tokens_the_first_blocks_rate():
    """Fine-tuning with layer decay (EoMT's optimiser): DINOv3's storage
    tokens sit below the first block, like DINOv2's register tokens, so
    they take its rate 0.8 ** (depth - 1), not the head's 1."""
    from dinov2_seg.engine.layer_decay import layer_decay_scale
    for name in ('backbone.storage_tokens', 'backbone.register_tokens',
                 'backbone.cls_token'):
        assert layer_decay_scale(name, 12, 0.8) == pytest.approx(0.8**11)
    assert layer_decay_scale('backbone.blocks.11.attn.qkv.weight', 12,
                             0.8) == 1.0
    assert layer_decay_scale('decode_head.conv_seg.weight', 12, 0.8) == 1.0
