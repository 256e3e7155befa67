"""init_segmentor(config, backbone=<a DINOv2 model in memory>), as in the
DINOv2 notebook: transformers' models (real ones, built from a small
config) and a model in Meta's layout."""
import pytest
import torch
import transformers
from helpers.archs import TINY_ARCH
from helpers.fabricate import fabricate_head_file
from helpers.meta_hub import MetaDinoViT, perturbed, segmentation_features
from helpers.tools import REPO

CONFIG = str(REPO / 'configs' / 'voc2012_vits14_linear.py')
REGISTER_ARCH = dict(
    TINY_ARCH,
    num_register_tokens=4,
    interpolate_offset=0.0,
    interpolate_antialias=True)


def tiny_options(arch: dict) -> dict:
    return {
        'model.backbone.arch': dict(arch, _delete_=True),
        'model.backbone.init_cfg': None,
        'model.decode_head.in_channels': [arch['embed_dim']],
    }


def hf_dinov2(registers: bool = False, hidden: int = 48, head: bool = False):
    """A transformers DINOv2 of TINY_ARCH's size with every weight
    perturbed, so that none is left at an initial value."""
    settings = dict(
        hidden_size=hidden,
        num_hidden_layers=TINY_ARCH['depth'],
        num_attention_heads=TINY_ARCH['num_heads'],
        image_size=518,
        patch_size=14)
    if registers:
        config = transformers.Dinov2WithRegistersConfig(
            num_register_tokens=4, **settings)
        model = transformers.Dinov2WithRegistersModel(config)
    elif head:
        model = transformers.Dinov2ForImageClassification(
            transformers.Dinov2Config(num_labels=7, **settings))
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**settings))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def hf_block_outputs(model, image: torch.Tensor) -> list:
    """transformers' own forward: every block's tokens after the final
    LayerNorm, class and register tokens dropped, as NCHW maps."""
    dinov2 = getattr(model, 'dinov2', model)
    with torch.no_grad():
        out = dinov2(pixel_values=image, output_hidden_states=True)
    skip = 1 + getattr(dinov2.config, 'num_register_tokens', 0)
    side = image.shape[-1] // 14
    return [
        dinov2.layernorm(hidden)[:, skip:].reshape(1, side, side,
                                                   -1).permute(0, 3, 1, 2)
        for hidden in out.hidden_states[1:]
    ]


@pytest.mark.parametrize('kind', ['Dinov2Model', 'registers', 'with_head'])
def test_transformers_model_gives_its_features(kind):
    from dinov2_seg.apis.inference import init_segmentor
    registers = kind == 'registers'
    hf = hf_dinov2(registers=registers, head=kind == 'with_head')
    arch = REGISTER_ARCH if registers else TINY_ARCH
    model = init_segmentor(CONFIG, backbone=hf, cfg_options=tiny_options(arch))
    image = torch.randn(
        1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.backbone(image)
    for got, want in zip(ours, hf_block_outputs(hf, image)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('registers', [False, True])
def test_meta_hub_module_with_a_head_file(tmp_path, registers):
    """A module with the attribute names and forward of Meta's torch.hub
    dinov2_vits14 (the released files are its state_dict; written in
    helpers.meta_hub from Meta's code) and one of Meta's head files: no
    backbone file needed; the segmentor's features are those of Meta's
    ``get_intermediate_layers`` on the center-padded image."""
    from dinov2_seg.apis.inference import init_segmentor
    arch = REGISTER_ARCH if registers else TINY_ARCH
    # Meta's _reg models: 4 registers, offset 0, antialiased resize.
    hub = perturbed(
        MetaDinoViT(
            TINY_ARCH['embed_dim'],
            TINY_ARCH['depth'],
            TINY_ARCH['num_heads'],
            registers=4 if registers else 0,
            offset=0.0 if registers else 0.1,
            antialias=registers))
    head = fabricate_head_file(tmp_path / 'head.pth', TINY_ARCH['embed_dim'],
                               1, 21)
    # The config names a backbone file that does not exist: the module is
    # used instead.
    model = init_segmentor(
        CONFIG,
        checkpoint=str(tmp_path / 'head.pth'),
        backbone=hub,
        cfg_options={
            'model.backbone.arch': dict(arch, _delete_=True),
            'model.decode_head.in_channels': [TINY_ARCH['embed_dim']],
        })
    state = model.state_dict()
    for key, value in hub.state_dict().items():
        assert torch.equal(state[f'backbone.{key}'], value), key
    for key, value in head.items():
        assert torch.equal(state[key], value), key
    # 61 x 75: padded to 70 x 84 (5 x 6 patches), position embeddings
    # resized from 37 x 37.
    image = torch.randn(
        2, 3, 61, 75, generator=torch.Generator().manual_seed(1))
    blocks = list(range(TINY_ARCH['depth']))
    with torch.no_grad():
        ours = model.backbone(image)
        want = segmentation_features(hub, image, blocks)
    assert len(ours) == len(want) == TINY_ARCH['depth']
    for got, expected in zip(ours, want):
        assert got.shape == (2, TINY_ARCH['embed_dim'], 5, 6)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_module_of_another_size_is_refused_with_both_shapes():
    from dinov2_seg.apis.inference import init_segmentor
    hf = hf_dinov2(hidden=96)
    with pytest.raises(ValueError) as error:
        init_segmentor(
            CONFIG, backbone=hf, cfg_options=tiny_options(TINY_ARCH))
    message = str(error.value)
    assert message.startswith(
        'Checkpoint the transformers.models.dinov2.modeling_dinov2.'
        "Dinov2Model module does not fit DinoVisionTransformer(arch='custom')")
    assert 'The weights look like arch' in message
    assert 'cls_token: file has (1, 1, 96), DinoVisionTransformer' in message
