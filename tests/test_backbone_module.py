"""init_segmentor(config, backbone=<a DINOv2 model in memory>), as in the
DINOv2 notebook: transformers' models (real ones, built from a small
config) and a model in Meta's layout."""
import pytest
import torch
import transformers

from helpers.archs import TINY_ARCH

from helpers.tools import REPO
from helpers.fabricate import fabricate_head_file, fabricate_official_file

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


def test_meta_layout_module_with_a_head_file(tmp_path):
    """A model whose parameters carry Meta's names, as torch.hub's
    dinov2_vits14 does (the released files are its state_dict), with one of
    Meta's head files: no backbone file needed."""
    from dinov2_seg.apis.inference import init_segmentor
    from dinov2_seg.models.backbones import DinoVisionTransformer
    official = fabricate_official_file('vits14', tmp_path / 'b.pth', depth=4)
    arch = dict(
        embed_dim=384,
        depth=4,
        num_heads=6,
        ffn='mlp',
        num_register_tokens=0,
        interpolate_offset=0.1,
        interpolate_antialias=False)
    hub_like = DinoVisionTransformer(arch=arch)
    hub_like.load_state_dict(official)
    head = fabricate_head_file(tmp_path / 'head.pth', 384, 1, 21)
    # The config names a backbone file that does not exist: the module is
    # used instead.
    model = init_segmentor(
        CONFIG,
        checkpoint=str(tmp_path / 'head.pth'),
        backbone=hub_like,
        cfg_options={'model.backbone.arch': dict(arch, _delete_=True)})
    state = model.state_dict()
    for key, value in official.items():
        assert torch.equal(state[f'backbone.{key}'], value), key
    for key, value in head.items():
        assert torch.equal(state[key], value), key


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
    assert 'The module looks like arch' in message
    assert 'cls_token: file has (1, 1, 96), DinoVisionTransformer' in message
