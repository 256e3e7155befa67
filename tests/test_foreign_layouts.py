"""Backbone weights in Hugging Face's and timm's layouts load as Meta's
(timm's own files: tests/test_timm_parity.py)."""
import pytest
import torch
import transformers

from dinov2_seg.checkpoints.foreign import convert_timm, to_official_layout
from dinov2_seg.models.backbones import ARCH_SETTINGS, DinoVisionTransformer

SMALL = dict(ARCH_SETTINGS['vits14'], depth=4)
REGISTERS = dict(
    SMALL,
    num_register_tokens=4,
    interpolate_offset=0.0,
    interpolate_antialias=True)
SWIGLU = dict(SMALL, embed_dim=48, num_heads=3, ffn='swiglu')


def hf_model(arch, registers=False):
    config = dict(
        hidden_size=arch['embed_dim'],
        num_hidden_layers=arch['depth'],
        num_attention_heads=arch['num_heads'],
        image_size=518,
        patch_size=14,
        use_swiglu_ffn=arch['ffn'] == 'swiglu')
    if registers:
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(
                num_register_tokens=4, **config))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**config))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make every tensor matter, norms and scales too
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def hf_features(model, x, blocks):
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    skip = 1 + getattr(model.config, 'num_register_tokens', 0)
    grid = x.shape[-1] // 14
    feats = []
    for index in blocks:
        tokens = model.layernorm(out.hidden_states[index + 1])[:, skip:]
        feats.append(
            tokens.reshape(x.shape[0], grid, grid, -1).permute(0, 3, 1, 2))
    return feats


def ours(arch, checkpoint):
    model = DinoVisionTransformer(
        arch=arch,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model


@pytest.mark.parametrize('arch,registers', [(SMALL, False), (REGISTERS, True),
                                            (SWIGLU, False)])
def test_transformers_files_give_transformers_features(tmp_path, arch,
                                                       registers):
    hf = hf_model(arch, registers)
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    want = hf_features(hf, x, range(arch['depth']))

    hf.save_pretrained(tmp_path / 'hub')  # the layout of Hub downloads
    torch.save(hf.state_dict(), tmp_path / 'modules.pth')  # transformers 5
    for checkpoint in (tmp_path / 'hub' / 'model.safetensors',
                       tmp_path / 'modules.pth'):
        with torch.no_grad():
            got = ours(arch, checkpoint)(x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_official_layout_passes_unchanged():
    state = DinoVisionTransformer(arch=dict(SMALL, depth=1)).state_dict()
    converted = to_official_layout(state)
    assert converted.keys() == state.keys()
    assert all(converted[k] is state[k] for k in state)


def test_timm_plain_model_gets_a_zero_mask_token():
    state = DinoVisionTransformer(arch=dict(SMALL, depth=1)).state_dict()
    del state['mask_token']
    converted = convert_timm(state)
    assert torch.equal(converted['mask_token'], torch.zeros(1, 384))
