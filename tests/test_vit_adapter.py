"""ViT-Adapter backbone: pyramid shapes, frozen ViT with a trainable adapter,
loading the ViT from a DINOv2 file, bad settings and inputs."""
import pytest
import torch
import torch.nn.functional as F

from dinov2_seg.models.backbones import DinoVisionTransformer, ViTAdapter
from dinov2_seg.models.backbones.dinov2_layers import SwiGLUFFN
from dinov2_seg.models.backbones.vit_adapter import even_interaction_indexes

ARCH = dict(
    embed_dim=64,
    depth=4,
    num_heads=2,
    ffn='swiglu',
    num_register_tokens=0,
    interpolate_offset=0.1,
    interpolate_antialias=False)


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
    assert [tuple(o.shape) for o in outs] == [(2, 64, 24, 40),
                                              (2, 64, 12, 20),
                                              (2, 64, 6, 10), (2, 64, 3, 5)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_registers_pass_through_the_blocks():
    arch = dict(ARCH, num_register_tokens=4)
    model = tiny_adapter(arch=arch).eval()
    with torch.no_grad():
        plain = model(torch.randn(1, 3, 64, 64))
        model.register_tokens.add_(1.0)
        shifted = model(torch.randn(1, 3, 64, 64))
    assert plain[0].shape == shifted[0].shape == (1, 64, 16, 16)


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

    torch.save(DinoVisionTransformer(arch=dict(ARCH, depth=3)).state_dict(),
               path)
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
