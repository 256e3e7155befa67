"""ViT-Adapter backbone: pyramid shapes, frozen ViT with a trainable adapter,
loading the ViT from a DINOv2 file, bad settings and inputs."""
import pytest
import torch
import torch.nn.functional as F
from helpers.archs import TINY_SWIGLU_ARCH
from helpers.reference import layer_norm, linear, resize_pos_embed, vit_block

from dinov2_seg.models.backbones import DinoVisionTransformer, DinoViTAdapter
from dinov2_seg.models.backbones.dinov2_layers import SwiGLUFFN
from dinov2_seg.models.backbones.vit_adapter import even_interaction_indexes

ARCH = TINY_SWIGLU_ARCH


def tiny_adapter(**kwargs) -> DinoViTAdapter:
    torch.manual_seed(0)
    settings = dict(
        arch=ARCH,
        deform_num_heads=2,
        conv_inplane=16,
        deform_ratio=0.5,
        norm_cfg=dict(type='BN'))
    settings.update(kwargs)
    return DinoViTAdapter(**settings)


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
    assert 'DinoViTAdapter(arch=' in str(error.value)
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
# adapter_modules.py), written from its formulas with plain tensor ops on
# the model's state_dict: every setting that leaves no trace in the shapes
# (norm eps, conv strides and padding, the conv FFN's 16:4:1 split of the
# prior levels, the bicubic resize of the positional embedding, where the
# class and register tokens go) is restated here. The deformable attention
# samples with grid_sample directly.
LN_EPS, BN_EPS = 1e-6, 1e-5  # Meta's partial(nn.LayerNorm, eps=1e-6); BN


def batch_norm(x, sd, name, eps=BN_EPS):
    shape = (1, -1, 1, 1)
    return ((x - sd[name + '.running_mean'].view(shape)) /
            torch.sqrt(sd[name + '.running_var'].view(shape) + eps) *
            sd[name + '.weight'].view(shape) + sd[name + '.bias'].view(shape))


def conv_bn_relu(x, sd, conv, norm, stride, bn_eps):
    x = F.conv2d(x, sd[conv + '.weight'], stride=stride, padding=1)
    return F.relu(batch_norm(x, sd, norm, bn_eps))


def spatial_prior(sd, x, bn_eps):
    """Stem (3 conv-BN-ReLU, strides 2, 1, 1, then a 3x3 max-pool of
    stride 2) and three stride-2 conv-BN-ReLU, each level projected to the
    ViT width by a 1x1 conv: c1 at stride 4, c2..c4 at 8, 16, 32."""
    p = 'spm.'
    for index, stride in ((0, 2), (3, 1), (6, 1)):
        x = conv_bn_relu(x, sd, f'{p}stem.{index}', f'{p}stem.{index + 1}',
                         stride, bn_eps)
    c = [F.max_pool2d(x, kernel_size=3, stride=2, padding=1)]
    for level in (2, 3, 4):
        c.append(
            conv_bn_relu(c[-1], sd, f'{p}conv{level}.0', f'{p}conv{level}.1',
                         2, bn_eps))
    return [
        F.conv2d(level, sd[f'{p}fc{i + 1}.weight'], sd[f'{p}fc{i + 1}.bias'])
        for i, level in enumerate(c)
    ]


def deform_attn(sd, p, query, ref, feat, shapes, heads, points):
    batch, num_q, _ = query.shape
    levels = len(shapes)
    value = linear(feat, sd, p + 'value_proj')
    head_dim = value.shape[-1] // heads
    offsets = linear(query, sd,
                     p + 'sampling_offsets').view(batch, num_q, heads, levels,
                                                  points, 2)
    weights = linear(query, sd, p + 'attention_weights').view(
        batch, num_q, heads,
        levels * points).softmax(-1).view(batch, num_q, heads, levels, points)
    out, start = 0, 0
    for level, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].reshape(batch, h, w, heads, head_dim)
        v = v.permute(0, 3, 4, 1, 2).reshape(batch * heads, head_dim, h, w)
        start += h * w
        # Offsets are in cells of the level; locations in [0, 1] as (x, y).
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
            align_corners=False)  # (B * heads, head_dim, Q, P)
        weight = weights[:, :, :,
                         level].permute(0, 2, 1,
                                        3).reshape(batch * heads, 1, num_q,
                                                   points)
        out = out + (sampled * weight).sum(-1)
    out = out.view(batch, heads * head_dim, num_q).transpose(1, 2)
    return linear(out, sd, p + 'output_proj')


def ref_points(shapes):
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h) / h,
            torch.linspace(0.5, w - 0.5, w) / w,
            indexing='ij')
        pts.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(pts)[None, :, None]


def conv_ffn(sd, p, x, hc, wc):
    """fc1, a 3x3 depth-wise conv on each prior level (Meta splits the
    tokens 16:4:1 and reshapes them to 2x, 1x and 0.5x the stride-16
    grid), GELU, fc2."""
    x = linear(x, sd, p + 'fc1')
    batch, n, c = x.shape
    n21 = n // 21
    parts = [(x[:, :16 * n21], 2 * hc, 2 * wc),
             (x[:, 16 * n21:20 * n21], hc, wc),
             (x[:, 20 * n21:], hc // 2, wc // 2)]
    x = torch.cat([
        F.conv2d(
            part.transpose(1, 2).reshape(batch, c, h, w),
            sd[p + 'dwconv.dwconv.weight'],
            sd[p + 'dwconv.dwconv.bias'],
            padding=1,
            groups=c).flatten(2).transpose(1, 2) for part, h, w in parts
    ], 1)
    return linear(F.gelu(x), sd, p + 'fc2')


def extract(sd, p, c, x, tok_shape, prior_shapes, hc, wc, settings):
    c = c + deform_attn(
        sd, p + 'attn.', layer_norm(c, sd, p + 'query_norm',
                                    settings['ln_eps']),
        ref_points(prior_shapes),
        layer_norm(x, sd, p + 'feat_norm', settings['ln_eps']), [tok_shape],
        settings['deform_heads'], 4)
    return c + conv_ffn(sd, p + 'ffn.',
                        layer_norm(c, sd, p + 'ffn_norm', settings['ln_eps']),
                        hc, wc)


def reference_adapter(sd, x, settings):
    """Meta's ViTAdapter.forward on the state_dict ``sd``; ``settings``:
    vit_heads, deform_heads, registers, stages ([first, last] blocks),
    ln_eps, bn_eps."""
    ln_eps = settings['ln_eps']
    batch, _, h, w = x.shape
    dim = sd['cls_token'].shape[-1]
    prior_shapes = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    tok = (h // 14, w // 14)
    hc, wc = h // 16, w // 16
    c1, c2, c3, c4 = spatial_prior(sd, x, settings['bn_eps'])
    c = torch.cat([
        level.flatten(2).transpose(1, 2) + sd['level_embed'][i]
        for i, level in enumerate((c2, c3, c4))
    ], 1)
    # No padding: the patch embedding drops the remainder; the positional
    # embedding is resized to the token grid by size, without antialias.
    x_tok = F.conv2d(
        x,
        sd['patch_embed.proj.weight'],
        sd['patch_embed.proj.bias'],
        stride=14).flatten(2).transpose(1, 2)
    x_tok = x_tok + resize_pos_embed(sd['pos_embed'], tok, 0.0, False)
    prefix = (sd['cls_token'] + sd['pos_embed'][:, :1]).expand(batch, -1, -1)
    if settings['registers']:
        prefix = torch.cat(
            [prefix, sd['register_tokens'].expand(batch, -1, -1)], 1)
    outs = []
    for i, (first, last) in enumerate(settings['stages']):
        p = f'interactions.{i}.'
        x_tok = x_tok + sd[p + 'injector.gamma'] * deform_attn(
            sd, p + 'injector.attn.',
            layer_norm(x_tok, sd, p + 'injector.query_norm', ln_eps),
            ref_points([tok]),
            layer_norm(c, sd, p + 'injector.feat_norm', ln_eps), prior_shapes,
            settings['deform_heads'], 4)
        seq = torch.cat([prefix, x_tok], 1)
        for block in range(first, last + 1):
            seq = vit_block(sd, f'blocks.{block}.', seq, settings['vit_heads'])
        prefix, x_tok = seq[:, :prefix.shape[1]], seq[:, prefix.shape[1]:]
        c = extract(sd, p + 'extractor.', c, x_tok, tok, prior_shapes, hc, wc,
                    settings)
        if i == len(settings['stages']) - 1:
            for extra in (0, 1):
                c = extract(sd, f'{p}extra_extractors.{extra}.', c, x_tok, tok,
                            prior_shapes, hc, wc, settings)
        outs.append(x_tok.transpose(1, 2).reshape(batch, dim, *tok))
    n2, n3 = 4 * hc * wc, hc * wc
    c2 = c[:, :n2].transpose(1, 2).reshape(batch, dim, 2 * hc, 2 * wc)
    c3 = c[:, n2:n2 + n3].transpose(1, 2).reshape(batch, dim, hc, wc)
    c4 = c[:, n2 + n3:].transpose(1, 2).reshape(batch, dim, hc // 2, wc // 2)
    c1 = F.conv_transpose2d(c2, sd['up.weight'], sd['up.bias'], stride=2) + c1
    sizes = [(4 * hc, 4 * wc), (2 * hc, 2 * wc), (hc, wc), (hc // 2, wc // 2)]
    feats = [
        f + F.interpolate(o, size=s, mode='bilinear', align_corners=False)
        for f, o, s in zip((c1, c2, c3, c4), outs, sizes)
    ]
    return [
        batch_norm(f, sd, f'norm{i + 1}', settings['bn_eps'])
        for i, f in enumerate(feats)
    ]


def randomised_adapter(registers: int):
    """An 8-block adapter whose every parameter and BN statistic matters
    (open gates, non-zero sampling offsets and attention logits, norms away
    from the identity)."""
    model = tiny_adapter(
        arch=dict(ARCH, depth=8, num_register_tokens=registers)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('gamma', 'sampling_offsets.weight',
                              'attention_weights.weight', 'level_embed',
                              'register_tokens')):
                param.copy_(
                    torch.randn(param.shape, generator=generator) * 0.3)
            elif name.endswith('norm.weight') or '_norm.' in name:
                param.uniform_(0.5, 1.5, generator=generator)
                if name.endswith('bias'):
                    param.sub_(1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
    return model


def relative_error(ours, reference) -> float:
    """Largest difference of any pyramid level, relative to its largest
    value: float32 after 8 blocks and 6 extractors differs in summation
    order by a few 1e-4."""
    return max(((o - r).abs().max() / r.abs().max()).item()
               for o, r in zip(ours, reference))


SETTINGS = dict(
    vit_heads=ARCH['num_heads'],
    deform_heads=2,
    stages=[[0, 1], [2, 3], [4, 5], [6, 7]],
    ln_eps=LN_EPS,
    bn_eps=BN_EPS)


@pytest.mark.parametrize('batch,registers', [(1, 0), (2, 4)])
def test_forward_equals_a_reference_of_metas_adapter(batch, registers):
    model = randomised_adapter(registers)
    assert model.interaction_indexes == SETTINGS['stages']
    settings = dict(SETTINGS, registers=registers)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, 96, 160, generator=generator)
    with torch.no_grad():
        ours = model(x)
        reference = reference_adapter(model.state_dict(), x, settings)
    assert [tuple(o.shape) for o in ours] == [(batch, 64, 24, 40),
                                              (batch, 64, 12, 20),
                                              (batch, 64, 6, 10),
                                              (batch, 64, 3, 5)]
    assert relative_error(ours, reference) < 1e-3


@pytest.mark.parametrize('wrong', [dict(ln_eps=1e-5), dict(bn_eps=1e-6)])
def test_reference_comparison_detects_another_norm_eps(wrong):
    """The comparison has teeth: the reference with another LayerNorm or
    BatchNorm eps is well outside its tolerance."""
    model = randomised_adapter(0)
    x = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        other = reference_adapter(model.state_dict(), x,
                                  dict(SETTINGS, registers=0, **wrong))
    assert relative_error(ours, other) > 3e-3
