"""ViT-Adapter backbone: pyramid shapes, frozen ViT with a trainable adapter,
loading the ViT from a DINOv2 file, bad settings and inputs."""
import pytest
import torch
import torch.nn.functional as F

from dinov2_seg.models.backbones import DinoVisionTransformer, ViTAdapter
from dinov2_seg.models.backbones.dinov2_layers import SwiGLUFFN
from dinov2_seg.models.backbones.vit_adapter import even_interaction_indexes

from conftest import TINY_SWIGLU_ARCH

ARCH = TINY_SWIGLU_ARCH


def tiny_adapter(**kwargs) -> ViTAdapter:
    torch.manual_seed(0)
    settings = dict(
        arch=ARCH,
        deform_num_heads=2,
        conv_inplane=16,
        deform_ratio=0.5,
        norm_cfg=dict(type='BN'))
    settings.update(kwargs)
    return ViTAdapter(**settings)


def test_pyramid_strides_4_to_32():
    model = tiny_adapter().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 96, 160))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 24, 40), (2, 64, 12, 20),
                                              (2, 64, 6, 10), (2, 64, 3, 5)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_registers_pass_through_the_blocks():
    arch = dict(ARCH, num_register_tokens=4)
    model = tiny_adapter(arch=arch).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        model.register_tokens.normal_()  # (a constant shift LayerNorm removes)
        shifted = model(x)
    assert plain[0].shape == shifted[0].shape == (1, 64, 16, 16)
    # The patch tokens attend to the registers in every block.
    assert (plain[2] - shifted[2]).abs().max() > 1e-3


def test_input_must_be_a_multiple_of_32():
    model = tiny_adapter().eval()
    with pytest.raises(ValueError, match=r'multiples of 32, got 100x160'):
        model(torch.randn(1, 3, 100, 160))
    with pytest.raises(ValueError, match='ResizeToMultiple'):
        model(torch.randn(1, 3, 96, 150))


def test_interaction_indexes():
    assert even_interaction_indexes(40) == [[0, 9], [10, 19], [20, 29],
                                            [30, 39]]
    assert tiny_adapter().interaction_indexes == [[0, 0], [1, 1], [2, 2],
                                                  [3, 3]]
    with pytest.raises(ValueError, match='must cover the 4 ViT blocks'):
        tiny_adapter(interaction_indexes=[[0, 1], [3, 3]])
    with pytest.raises(ValueError, match='cannot split 6 blocks'):
        tiny_adapter(arch=dict(ARCH, depth=6))
    # Any split works when given; only the last stage has extra extractors.
    model = tiny_adapter(interaction_indexes=[[0, 1], [2, 3]])
    assert len(model.interactions) == 2
    assert model.interactions[0].extra_extractors is None
    assert len(model.interactions[1].extra_extractors) == 2


def test_frozen_vit_trainable_adapter():
    model = tiny_adapter()
    model.train()
    assert not model.blocks.training and not model.patch_embed.training
    assert model.spm.training and model.interactions.training
    vit = [p for n, p in model.named_parameters() if n.startswith('blocks.')]
    assert vit and not any(p.requires_grad for p in vit)
    # Start from non-zero gates so that the injectors influence the output.
    for stage in model.interactions:
        stage.injector.gamma.data.fill_(0.5)
    outs = model(torch.randn(2, 3, 64, 96))
    sum(o.square().mean() for o in outs).backward()
    # Gradients reach the first injector only through the frozen blocks.
    grad = model.interactions[0].injector.attn.value_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.spm.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vit)


def test_gates_start_closed():
    """With the official gate init 0 the tokens equal the plain ViT's."""
    model = tiny_adapter(add_vit_feature=True).eval()
    vit = DinoVisionTransformer(arch=ARCH, out_indices=[0, 1, 2, 3]).eval()
    state = {
        k: v
        for k, v in model.state_dict().items()
        if k.startswith(('blocks.', 'patch_embed.', 'cls_token', 'pos_embed'))
    }
    vit.load_state_dict(state, strict=False)
    captured = []
    hook = model.interactions[-1].extractor.register_forward_hook(
        lambda module, args, out: captured.append(args[1]))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        model(x)
        hook.remove()
        # The adapter resizes the positional embedding by size: force the
        # plain ViT to do the same for the comparison.
        vit.interpolate_offset = 0.0
        tokens = vit.patch_embed(x)[0]
        tokens = torch.cat([vit.cls_token, tokens], 1) + \
            vit.interpolate_pos_embed((4, 6))
        for block in vit.blocks:
            tokens = block(tokens)
    torch.testing.assert_close(captured[0], tokens[:, 1:])


def test_vit_weights_from_a_dinov2_file(tmp_path):
    source = DinoVisionTransformer(arch=ARCH)
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / 'vit.pth'
    torch.save(source.state_dict(), path)  # holds norm.* and mask_token too
    model = tiny_adapter(
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    spm_before = model.spm.fc1.weight.clone()
    model.init_weights()
    torch.testing.assert_close(model.blocks[3].mlp.w12.weight,
                               source.blocks[3].mlp.w12.weight)
    torch.testing.assert_close(model.pos_embed, source.pos_embed)
    torch.testing.assert_close(model.spm.fc1.weight, spm_before)

    torch.save(
        DinoVisionTransformer(arch=dict(ARCH, depth=3)).state_dict(), path)
    model = tiny_adapter(
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError) as error:
        model.init_weights()
    assert 'ViTAdapter(arch=' in str(error.value)
    assert 'Missing keys' in str(error.value) and 'blocks.3.' in str(
        error.value)


def test_swiglu_fused_equals_separate_projections():
    """Meta's segmentation ViT keeps w1 and w2 apart; fused as [w1; w2] they
    compute silu(w1 x) * (w2 x)."""
    torch.manual_seed(0)
    ffn = SwiGLUFFN(64, 256)
    hidden = ffn.w3.in_features
    w1, w2 = torch.randn(2, hidden, 64)
    b1, b2 = torch.randn(2, hidden)
    with torch.no_grad():
        ffn.w12.weight.copy_(torch.cat([w1, w2]))
        ffn.w12.bias.copy_(torch.cat([b1, b2]))
    x = torch.randn(3, 5, 64)
    expected = ffn.w3(F.silu(x @ w1.T + b1) * (x @ w2.T + b2))
    torch.testing.assert_close(ffn(x), expected)


# An independent reference of Meta's ViT-Adapter forward
# (dinov2/eval/segmentation_m2f/models/backbones/vit_adapter.py and
# adapter_modules.py), written from its formulas on the same weights: the
# deformable attention sampled with grid_sample directly, the conv FFN split
# into levels by Meta's 16:4:1 token fractions.
def ref_deform_attn(attn, query, ref, feat, shapes):
    batch, num_q, _ = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    value = attn.value_proj(feat).view(batch, feat.shape[1], heads, -1)
    offsets = attn.sampling_offsets(query).view(batch, num_q, heads, levels,
                                                points, 2)
    weights = attn.attention_weights(query).view(batch, num_q, heads,
                                                 levels * points)
    weights = weights.softmax(-1).view(batch, num_q, heads, levels, points)
    out = 0
    start = 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(
            batch * heads, -1, h, w)
        start += h * w
        loc = ref[:, :, None, 0, None, :] + offsets[:, :, :, level] / \
            torch.tensor([w, h], dtype=torch.float32)
        grid = (2 * loc - 1).permute(0, 2, 1, 3,
                                     4).reshape(batch * heads, num_q, points,
                                                2)
        sampled = F.grid_sample(
            v,
            grid,
            mode='bilinear',
            padding_mode='zeros',
            align_corners=False)  # (B*heads, C, Q, P)
        wl = weights[:, :, :,
                     level].permute(0, 2, 1,
                                    3).reshape(batch * heads, 1, num_q, points)
        out = out + (sampled * wl).sum(-1)
    out = out.view(batch, -1, num_q).transpose(1, 2)
    return attn.output_proj(out)


def ref_points(shapes):
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h) / h,
            torch.linspace(0.5, w - 0.5, w) / w,
            indexing='ij')
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(pts)[None, :, None]


def ref_cffn(ffn, x, hc, wc):
    x = ffn.fc1(x)
    batch, n, c = x.shape
    n21 = n // 21
    parts = [(x[:, :16 * n21], 2 * hc, 2 * wc),
             (x[:, 16 * n21:20 * n21], hc, wc),
             (x[:, 20 * n21:], hc // 2, wc // 2)]
    conv = ffn.dwconv.dwconv
    x = torch.cat([
        conv(p.transpose(1, 2).reshape(batch, c, h, w)).flatten(2).transpose(
            1, 2) for p, h, w in parts
    ], 1)
    return ffn.fc2(F.gelu(x))


def ref_extract(ext, c, x, tok_shape, prior_shapes, hc, wc):
    c = c + ref_deform_attn(ext.attn, ext.query_norm(c),
                            ref_points(prior_shapes), ext.feat_norm(x),
                            [tok_shape])
    return c + ref_cffn(ext.ffn, ext.ffn_norm(c), hc, wc)


def reference_adapter(model, x):
    _, _, h, w = x.shape
    dim = model.embed_dim
    prior_shapes = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    tok = (h // 14, w // 14)
    hc, wc = h // 16, w // 16
    spm = model.spm
    c1 = spm.stem(x)
    c2 = spm.conv2(c1)
    c3 = spm.conv3(c2)
    c4 = spm.conv4(c3)
    c1 = spm.fc1(c1)
    cs = [
        fc(c).view(1, dim, -1).transpose(1, 2) + model.level_embed[i]
        for i, (fc, c) in enumerate(((spm.fc2, c2), (spm.fc3, c3), (spm.fc4,
                                                                    c4)))
    ]
    c = torch.cat(cs, 1)
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    grid = int((model.pos_embed.shape[1] - 1)**0.5)
    pos = model.pos_embed[:, 1:].reshape(1, grid, grid,
                                         dim).permute(0, 3, 1, 2)
    pos = F.interpolate(
        pos, size=tok, mode='bicubic',
        align_corners=False).reshape(1, dim, -1).transpose(1, 2)
    cls = model.cls_token + model.pos_embed[:, :1]
    x_tok = tokens + pos
    outs = []
    for stage, (first, last) in zip(model.interactions,
                                    model.interaction_indexes):
        inj = stage.injector
        x_tok = x_tok + inj.gamma * ref_deform_attn(
            inj.attn, inj.query_norm(x_tok), ref_points(
                [tok]), inj.feat_norm(c), prior_shapes)
        seq = torch.cat([cls, x_tok], 1)
        for block in model.blocks[first:last + 1]:
            seq = block(seq)
        cls, x_tok = seq[:, :1], seq[:, 1:]
        c = ref_extract(stage.extractor, c, x_tok, tok, prior_shapes, hc, wc)
        if stage.extra_extractors is not None:
            for ext in stage.extra_extractors:
                c = ref_extract(ext, c, x_tok, tok, prior_shapes, hc, wc)
        outs.append(x_tok.transpose(1, 2).view(1, dim, *tok))
    n2, n3 = 4 * hc * wc, hc * wc
    c2 = c[:, :n2].transpose(1, 2).view(1, dim, 2 * hc, 2 * wc)
    c3 = c[:, n2:n2 + n3].transpose(1, 2).view(1, dim, hc, wc)
    c4 = c[:, n2 + n3:].transpose(1, 2).view(1, dim, hc // 2, wc // 2)
    c1 = model.up(c2) + c1
    sizes = [(4 * hc, 4 * wc), (2 * hc, 2 * wc), (hc, wc), (hc // 2, wc // 2)]
    feats = [
        f + F.interpolate(o, size=s, mode='bilinear', align_corners=False)
        for f, o, s in zip((c1, c2, c3, c4), outs, sizes)
    ]
    return [getattr(model, f'norm{i + 1}')(f) for i, f in enumerate(feats)]


def test_forward_equals_a_reference_of_metas_adapter():
    model = tiny_adapter(arch=dict(ARCH, depth=8)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('gamma', 'sampling_offsets.weight',
                              'attention_weights.weight')):
                param.copy_(
                    torch.randn(param.shape, generator=generator) * 0.3)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        x = torch.randn(1, 3, 96, 160, generator=generator)
        ours = model(x)
        reference = reference_adapter(model, x)
    assert model.interaction_indexes == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for mine, ref in zip(ours, reference):
        # float32 after 8 blocks and 6 extractors: summation order differs.
        torch.testing.assert_close(mine, ref, atol=2e-4, rtol=1e-4)
