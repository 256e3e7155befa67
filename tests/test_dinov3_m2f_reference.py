"""The independent reference of Meta's DINOv3 Mask2Former
(helpers/dinov3_m2f_reference.py) checked on its own: the fabricated head
file has exactly the manifest's keys and shapes, the 7B head file's size by
arithmetic from Meta's module definitions, the deformable attention equals
the formula written as loops, and the whole model runs on a reduced
configuration with the shapes Meta's code gives."""
import math

import pytest
import torch
from helpers import dinov3_m2f_reference as m2f

# Reduced model: ViT width 64, 4 blocks, hidden 64, 4 attention heads, 16
# deformable heads in the adapter (Meta's; 64 / 16 = 4 per head).
SMALL = dict(
    embed_dim=64,
    depth=4,
    hidden_dim=64,
    num_classes=5,
    num_queries=10,
    num_heads=4,
    ffn_dim=128,
    dec_layers=3,
    enc_layers=2)
SMALL_ARCH = dict(embed_dim=64, depth=4, num_heads=4)


def small_head(seed=0):
    return m2f.fabricate_meta_m2f_head(
        generator=torch.Generator().manual_seed(seed), **SMALL)


def small_model(seed=0):
    backbone = m2f.fabricate_meta_backbone(
        64, 4, 4, generator=torch.Generator().manual_seed(seed + 1))
    kwargs = {
        k: v
        for k, v in SMALL.items() if k not in ('embed_dim', 'depth')
    }
    return m2f.MetaDinoV3M2FReference(backbone, SMALL_ARCH, small_head(seed),
                                      **kwargs)


def test_adapter_indices_follow_meta():
    assert m2f.meta_adapter_indices(24) == [4, 11, 17, 23]
    assert m2f.meta_adapter_indices(40) == [9, 19, 29, 39]
    assert m2f.meta_adapter_indices(12) == [2, 5, 8, 11]
    assert m2f.meta_adapter_indices(32) == [7, 15, 23, 31]
    assert m2f.meta_adapter_indices(4) == [0, 1, 2, 3]


def test_fabricated_head_equals_manifest():
    state = small_head()
    manifest = m2f.meta_m2f_head_manifest(**SMALL)
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest
    assert all(
        k.startswith(('segmentation_model.0.',
                      'segmentation_model.1.pixel_decoder.',
                      'segmentation_model.1.predictor.')) for k in state)
    assert not any('backbone' in k for k in state)
    # A sample of Meta's names and shapes, written out.
    a, h = 'segmentation_model.0.', 'segmentation_model.1.'
    want = {
        a + 'level_embed': (3, 64),
        a + 'spm.stem.0.weight': (64, 3, 3, 3),
        a + 'spm.stem.4.running_var': (64, ),
        a + 'spm.stem.7.num_batches_tracked': (),
        a + 'spm.conv4.0.weight': (256, 256, 3, 3),
        a + 'spm.fc4.weight': (64, 256, 1, 1),
        a + 'interactions.0.extractor.attn.sampling_offsets.weight': (128, 64),
        a + 'interactions.0.extractor.attn.value_proj.weight': (32, 64),
        a + 'interactions.0.extractor.ffn.dwconv.dwconv.weight': (16, 1, 3, 3),
        a + 'interactions.3.extra_extractors.1.ffn_norm.bias': (64, ),
        a + 'up.weight': (64, 64, 2, 2),
        a + 'norm4.running_mean': (64, ),
        h + 'pixel_decoder.input_convs.2.1.weight': (64, ),
        h + 'pixel_decoder.encoder.level_encoding': (3, 64),
        h + 'pixel_decoder.encoder.encoder.layers.1.self_attn.'
        'sampling_offsets.weight': (96, 64),
        h + 'pixel_decoder.lateral_convs.0.weight': (64, 64, 1, 1),
        h + 'pixel_decoder.output_convs.0.norm.bias': (64, ),
        h + 'pixel_decoder.mask_feature.bias': (64, ),
        h + 'predictor.transformer_cross_attention_layers.2.multihead_attn.'
        'in_proj_weight': (192, 64),
        h + 'predictor.query_feat.weight': (10, 64),
        h + 'predictor.class_embed.weight': (6, 64),
        h + 'predictor.mask_embed.layers.2.bias': (64, ),
    }
    for key, shape in want.items():
        assert manifest[key] == shape, key
    assert not any('interactions.2.extra_' in k for k in state)
    assert not any('lateral_convs.0.bias' in k or 'input_proj' in k
                   for k in state)
    # Non-trivial values: positive BN variances away from 1, a count.
    var = state[a + 'norm1.running_var']
    assert (var > 0.4).all() and (var - 1).abs().max() > 0.2
    assert state[a + 'norm1.num_batches_tracked'].dtype == torch.long
    assert state[a + 'norm1.weight'].std() > 0.05
    torch.testing.assert_close(
        small_head(0)[a + 'up.weight'], state[a + 'up.weight'])


def _head_file_numel(E=4096,
                     D=2048,
                     inpl=64,
                     dh=16,
                     P=4,
                     ratio=0.5,
                     cffn=0.25,
                     Q=100,
                     C=150,
                     F=4096,
                     heads=16,
                     dec=9,
                     enc=6):
    """Meta's head file, counted by hand from the module definitions."""

    def bn(c):
        return 4 * c + 1  # weight, bias, running mean, var, count

    def lin(i, o):
        return i * o + o

    spm = (3 * inpl * 9 + 2 * inpl * inpl * 9 + 3 * bn(inpl) +
           inpl * 2 * inpl * 9 + bn(2 * inpl) + 2 * inpl * 4 * inpl * 9 +
           bn(4 * inpl) + 4 * inpl * 4 * inpl * 9 + bn(4 * inpl) +
           lin(inpl, E) + lin(2 * inpl, E) + 2 * lin(4 * inpl, E))
    v, hid = int(E * ratio), int(E * cffn)
    extractor = (3 * 2 * E + lin(E, dh * P * 2) + lin(E, dh * P) + lin(E, v) +
                 lin(v, E) + lin(E, hid) + hid * 9 + hid + lin(hid, E))
    adapter = 3 * E + spm + 6 * extractor + E * E * 4 + E + 4 * bn(E)
    enc_layer = (
        lin(D, heads * 3 * P * 2) + lin(D, heads * 3 * P) + 2 * lin(D, D) +
        2 * D + lin(D, F) + lin(F, D) + 2 * D)
    pixel = (3 * (lin(E, D) + 2 * D) + enc * enc_layer + 3 * D + lin(D, D) +
             E * D + 2 * D + D * D * 9 + 2 * D)
    attn = 3 * D * D + 3 * D + lin(D, D) + 2 * D
    dec_layer = 2 * attn + lin(D, F) + lin(F, D) + 2 * D
    predictor = (
        dec * dec_layer + 2 * D + 2 * Q * D + 3 * D + lin(D, C + 1) +
        3 * lin(D, D))
    return adapter + pixel + predictor, adapter


def test_vit7b_head_manifest_size():
    """The 7B head file (ViT width 4096, 40 blocks; Meta's defaults): its
    tensor count by arithmetic: 927.5 M numbers (adapter 227.1 M, pixel
    decoder 233.7 M, predictor 466.6 M), 479 tensors."""
    manifest = m2f.meta_m2f_head_manifest(4096, 40)
    total = sum(math.prod(s) for s in manifest.values())
    adapter = sum(
        math.prod(s) for k, s in manifest.items()
        if k.startswith('segmentation_model.0.'))
    want_total, want_adapter = _head_file_numel()
    assert (total, adapter) == (want_total, want_adapter)
    assert (total, adapter) == (927_454_817, 227_119_178)
    assert manifest['segmentation_model.1.predictor.class_embed.weight'] == (
        151, 2048)
    assert manifest['segmentation_model.0.interactions.3.extra_extractors.0.'
                    'attn.value_proj.weight'] == (2048, 4096)
    assert len(manifest) == 479


def _random_case(seed, levels, batch=2, queries=3, heads=2, dim=3, points=2):
    g = torch.Generator().manual_seed(seed)
    size = sum(h * w for h, w in levels)
    value = torch.randn(batch, size, heads, dim, generator=g)
    # Some samples fall outside [0, 1]: the zero padding is exercised.
    loc = torch.rand(
        batch, queries, heads, len(levels), points, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(
        batch, queries, heads, len(levels), points, generator=g)
    return value, loc, weights


def test_deform_attn_grid_sample_equals_bruteforce():
    levels = [(3, 4), (2, 5), (1, 1)]
    value, loc, weights = _random_case(0, levels)
    got = m2f.ms_deform_attn_grid_sample(value, levels, loc, weights)
    want = m2f.ms_deform_attn_bruteforce(value, levels, loc, weights)
    assert got.shape == (2, 3, 2 * 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # At a pixel centre, with weight one: exactly that pixel's value.
    loc = torch.tensor([(1 + 0.5) / 4, (2 + 0.5) / 3]).expand_as(loc).clone()
    weights = torch.zeros_like(weights)
    weights[:, :, :, 0, 0] = 1
    got = m2f.ms_deform_attn_grid_sample(value, levels, loc, weights)
    torch.testing.assert_close(
        got.view(2, 3, 2, 3), value[:, 2 * 4 + 1][:,
                                                  None].expand(-1, 3, -1, -1))


def test_deform_attn_equals_mmcv_pytorch_formula():
    """Optional cross-check with mmcv's pure-PyTorch formula (not project
    code)."""
    ops = pytest.importorskip('mmcv.ops.multi_scale_deform_attn')
    levels = [(3, 4), (2, 5)]
    value, loc, weights = _random_case(1, levels)
    got = m2f.ms_deform_attn_grid_sample(value, levels, loc, weights)
    want = ops.multi_scale_deformable_attn_pytorch(value, torch.tensor(levels),
                                                   loc, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sine_position_encoding_values():
    pos = m2f.sine_position_encoding(1, 3, 5, 8)  # 4 features per axis
    assert pos.shape == (1, 8, 3, 5)
    i, j = 2, 1
    y = (i + 1) / (3 + 1e-6) * 2 * math.pi
    x = (j + 1) / (5 + 1e-6) * 2 * math.pi
    want = [
        math.sin(y),
        math.cos(y),
        math.sin(y / 100),
        math.cos(y / 100),
        math.sin(x),
        math.cos(x),
        math.sin(x / 100),
        math.cos(x / 100)
    ]
    torch.testing.assert_close(pos[0, :, i, j], torch.tensor(want))


def test_reference_runs_on_reduced_model():
    model = small_model()
    img = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    feats = model.adapter_features(img)
    assert {
        k: tuple(v.shape)
        for k, v in feats.items()
    } == {
        '1': (1, 64, 16, 24),
        '2': (1, 64, 8, 12),
        '3': (1, 64, 4, 6),
        '4': (1, 64, 2, 3)
    }
    logits, masks = model(img)
    assert logits.shape == (1, 10, 6) and masks.shape == (1, 10, 16, 24)
    sem = model.semantic(img, (64, 96))
    assert sem.shape == (1, 5, 64, 96)
    for t in (*feats.values(), logits, masks, sem):
        assert torch.isfinite(t).all()
    # Non-degenerate: the masks vary over the image and across queries,
    # the class scores are in (0, queries).
    assert masks.std(dim=(-1, -2)).min() > 1e-3
    assert masks[0, 0].sub(masks[0, 1]).abs().max() > 1e-2
    assert 0 < sem.min() and sem.max() < 10


def test_reference_loads_strictly_and_checks_sizes():
    state = small_head()
    del state['segmentation_model.0.norm1.num_batches_tracked']
    backbone = m2f.fabricate_meta_backbone(64, 4, 4, torch.Generator())
    kwargs = {
        k: v
        for k, v in SMALL.items() if k not in ('embed_dim', 'depth')
    }
    with pytest.raises(RuntimeError, match='num_batches_tracked'):
        m2f.MetaDinoV3M2FReference(backbone, SMALL_ARCH, state, **kwargs)
    model = small_model()
    with pytest.raises(ValueError, match='divisible by 32'):
        model(torch.zeros(1, 3, 64, 80))
