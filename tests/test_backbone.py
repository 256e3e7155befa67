import math

import pytest
import torch
from helpers.fabricate import fabricate_official_file, official_manifest
from helpers.reference import reference_features

from dinov2_seg.models.backbones import ARCH_SETTINGS, DinoVisionTransformer
from dinov2_seg.models.backbones.dinov2 import center_pad

# Meta's hub models, written from the release (FACTS.md, 'Official DINOv2
# backbones'; dinov2/hub/backbones.py): embed dim, depth, heads, FFN.
OFFICIAL_SIZES = {
    'vits14': (384, 12, 6, 'mlp'),
    'vitb14': (768, 12, 12, 'mlp'),
    'vitl14': (1024, 24, 16, 'mlp'),
    'vitg14': (1536, 40, 24, 'swiglu'),
}
# Positional-embedding resize and register tokens: original models offset
# 0.1 without antialias; the _reg models offset 0.0, antialias, 4 registers.
ORIGINAL = dict(registers=0, offset=0.1, antialias=False)
REGISTERS = dict(registers=4, offset=0.0, antialias=True)
OFFICIAL_PRESETS = {
    **{
        name: ORIGINAL
        for name in OFFICIAL_SIZES
    },
    **{
        f'{name}_reg4': REGISTERS
        for name in OFFICIAL_SIZES
    },
}


@pytest.mark.parametrize('arch', sorted(OFFICIAL_PRESETS))
def test_preset_matches_official_layout(arch):
    with torch.device('meta'):
        model = DinoVisionTransformer(arch=arch)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_manifest(arch)


@pytest.mark.parametrize('arch,millions',
                         [('vits14', 22.06), ('vitb14', 86.58),
                          ('vitl14', 304.37), ('vitg14', 1136.48)])
def test_parameter_counts(arch, millions):
    with torch.device('meta'):
        model = DinoVisionTransformer(arch=arch)
    count = sum(p.numel() for p in model.parameters())
    expected = sum(math.prod(s) for s in official_manifest(arch).values())
    assert count == expected
    assert count / 1e6 == pytest.approx(millions, abs=0.01)


def test_presets_are_metas_hub_models():
    """Every preset, and only those, is one of Meta's hub models with its
    size and its positional-embedding resize."""
    assert set(ARCH_SETTINGS) == set(OFFICIAL_PRESETS)
    for name, settings in ARCH_SETTINGS.items():
        dim, depth, heads, ffn = OFFICIAL_SIZES[name.split('_')[0]]
        official = OFFICIAL_PRESETS[name]
        assert (settings['embed_dim'], settings['depth'],
                settings['num_heads'], settings['ffn']) == (dim, depth, heads,
                                                            ffn), name
        assert (
            settings['num_register_tokens'], settings['interpolate_offset'],
            settings['interpolate_antialias']) == (official['registers'],
                                                   official['offset'],
                                                   official['antialias']), name


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(KeyError, match="Unknown DINOv2 arch 'vitx14'"):
        DinoVisionTransformer(arch='vitx14')


@pytest.mark.parametrize('arch', ['vits14', 'vits14_reg4'])
@pytest.mark.parametrize('size', [(31, 45), (14 * 37, 14 * 37), (40, 40)])
def test_loaded_file_reproduces_reference_features(tmp_path, arch, size):
    path = tmp_path / f'dinov2_{arch}_pretrain.pth'
    state = fabricate_official_file(arch, path)
    model = DinoVisionTransformer(
        arch=arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = model(x)
    official = OFFICIAL_PRESETS[arch]
    ref = reference_features(
        state,
        x,
        OFFICIAL_SIZES['vits14'][2],
        official['registers'],
        official['offset'],
        official['antialias'],
        blocks_to_take=[8, 9, 10, 11])
    grid = (math.ceil(size[0] / 14), math.ceil(size[1] / 14))
    assert len(feats) == 4
    for got, want in zip(feats, ref):
        assert got.shape == (2, 384, *grid)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_interpolation_offset_changes_features(tmp_path):
    """The 0.1 offset of the original models is not a no-op: each setting
    gives the reference's features for it, and the two differ."""
    path = tmp_path / 'f.pth'
    state = fabricate_official_file('vits14', path, depth=1)
    arch = dict(ARCH_SETTINGS['vits14'], depth=1)
    x = torch.randn(1, 3, 70, 98)
    feats = {}
    for offset in (0.1, 0.0):
        model = DinoVisionTransformer(
            arch=dict(arch, interpolate_offset=offset), out_indices=[0])
        model.load_state_dict(state)
        with torch.no_grad():
            feats[offset] = model(x)[0]
        want = reference_features(state, x, 6, 0, offset, False, [0])[0]
        torch.testing.assert_close(feats[offset], want, atol=1e-4, rtol=1e-4)
    assert (feats[0.1] - feats[0.0]).abs().max() > 1e-3


def test_center_padding_is_centred():
    x = torch.ones(1, 1, 31, 45)
    padded = center_pad(x, 14)
    assert padded.shape[-2:] == (42, 56)
    rows = padded[0, 0].sum(1).nonzero().flatten()
    cols = padded[0, 0].sum(0).nonzero().flatten()
    # 11 rows of padding: 5 on top, 6 below; 11 columns: 5 left, 6 right.
    assert (rows.min().item(), rows.max().item()) == (5, 35)
    assert (cols.min().item(), cols.max().item()) == (5, 49)
    assert center_pad(torch.ones(1, 1, 28, 14), 14).shape[-2:] == (28, 14)


def test_image_smaller_than_a_patch():
    model = DinoVisionTransformer(arch=dict(ARCH_SETTINGS['vits14'], depth=2))
    feats = model(torch.randn(1, 3, 5, 9))
    assert [f.shape for f in feats] == [(1, 384, 1, 1)] * 2


def test_out_indices_and_negative_indices():
    arch = dict(ARCH_SETTINGS['vits14'], depth=6)
    model = DinoVisionTransformer(arch=arch, out_indices=[1, -1])
    assert model.out_indices == (1, 5)
    assert len(model(torch.randn(1, 3, 28, 28))) == 2
    with pytest.raises(ValueError, match='out of range for a 6-block'):
        DinoVisionTransformer(arch=arch, out_indices=[6])


def test_frozen_by_default():
    model = DinoVisionTransformer(arch=dict(ARCH_SETTINGS['vits14'], depth=2))
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not model.blocks[0].training
    feats = model(torch.randn(1, 3, 28, 28))
    assert feats[0].grad_fn is None


def test_fine_tune_option():
    model = DinoVisionTransformer(
        arch=dict(ARCH_SETTINGS['vits14'], depth=2),
        frozen=False,
        drop_path_rate=0.1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'blocks.1.attn.qkv.weight' in trainable
    assert 'mask_token' not in trainable  # unused for segmentation
    model.train()
    assert model.training
    feats = model(torch.randn(1, 3, 28, 28))
    feats[-1].sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_random_init_warns():
    model = DinoVisionTransformer(arch=dict(ARCH_SETTINGS['vits14'], depth=1))
    with pytest.warns(UserWarning, match='randomly initialised'):
        model.init_weights()
