"""DINOv3 ConvNeXt: Meta's files load strictly, Hugging Face's are
converted, and the features match plain-torch ConvNeXt formulas."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from dinov2_seg.checkpoints.dinov3_convnext import (convert_hf_convnext,
                                                    is_hf_convnext_layout,
                                                    load_convnext_state_dict)
from dinov2_seg.models.backbones import DinoV3ConvNeXt

# Meta's sizes, written from dinov3/models/convnext.py (convnext_sizes).
SIZES = {
    'tiny': ([3, 3, 9, 3], [96, 192, 384, 768]),
    'small': ([3, 3, 27, 3], [96, 192, 384, 768]),
    'base': ([3, 3, 27, 3], [128, 256, 512, 1024]),
    'large': ([3, 3, 27, 3], [192, 384, 768, 1536]),
}
# A four-stage ConvNeXt small enough for the numerical checks.
SMALL = dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32])


def meta_shapes(depths, dims) -> dict:
    """Names and shapes of Meta's ConvNeXt state_dict: ``stem`` conv 4x4 +
    channels-first norm, then norm + 2x2 conv per downsampling; blocks of
    dwconv 7x7, norm, pwconv1/2 (4x) and gamma; the final norm, listed
    again as ``norms.3``."""
    shapes = {
        'downsample_layers.0.0.weight': (dims[0], 3, 4, 4),
        'downsample_layers.0.0.bias': (dims[0], ),
        'downsample_layers.0.1.weight': (dims[0], ),
        'downsample_layers.0.1.bias': (dims[0], ),
    }
    for i in range(1, 4):
        shapes.update({
            f'downsample_layers.{i}.0.weight': (dims[i - 1], ),
            f'downsample_layers.{i}.0.bias': (dims[i - 1], ),
            f'downsample_layers.{i}.1.weight': (dims[i], dims[i - 1], 2, 2),
            f'downsample_layers.{i}.1.bias': (dims[i], ),
        })
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        for j in range(depth):
            b = f'stages.{i}.{j}.'
            shapes.update({
                b + 'gamma': (dim, ),
                b + 'dwconv.weight': (dim, 1, 7, 7),
                b + 'dwconv.bias': (dim, ),
                b + 'norm.weight': (dim, ),
                b + 'norm.bias': (dim, ),
                b + 'pwconv1.weight': (4 * dim, dim),
                b + 'pwconv1.bias': (4 * dim, ),
                b + 'pwconv2.weight': (dim, 4 * dim),
                b + 'pwconv2.bias': (dim, ),
            })
    for name in ('norm', 'norms.3'):
        shapes.update({
            f'{name}.weight': (dims[3], ),
            f'{name}.bias': (dims[3], )
        })
    return shapes


def fabricate(depths, dims, seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(s, generator=generator) * 0.1
        for k, s in meta_shapes(depths, dims).items()
    }
    state['norms.3.weight'] = state['norm.weight'].clone()
    state['norms.3.bias'] = state['norm.bias'].clone()
    return state


def hf_layout(state: dict) -> dict:
    """Meta's names -> DINOv3ConvNextModel's, written from transformers'
    modeling_dinov3_convnext.py."""
    renames = {
        'dwconv': 'depthwise_conv',
        'norm': 'layer_norm',
        'pwconv1': 'pointwise_conv1',
        'pwconv2': 'pointwise_conv2',
        'gamma': 'gamma'
    }
    out = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0] == 'norms':
            continue
        if parts[0] == 'norm':
            out['layer_norm.' + parts[1]] = value
        elif parts[0] == 'downsample_layers':
            out[f'model.stages.{parts[1]}.downsample_layers.'
                f'{parts[2]}.{parts[3]}'] = value
        else:
            _, stage, block, name, *tail = parts
            out['.'.join(
                ['model.stages', stage, 'layers', block, renames[name],
                 *tail])] = value
    return out


@pytest.mark.parametrize('size', SIZES)
def test_parameters_have_meta_names_and_shapes(size):
    with torch.device('meta'):
        model = DinoV3ConvNeXt(size)
    expected = meta_shapes(*SIZES[size])
    del expected['norms.3.weight'], expected['norms.3.bias']
    assert {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
    } == expected


def test_meta_file_loads_strictly_through_init_cfg(tmp_path):
    # Meta's layout at a reduced size (the full sizes' names and shapes are
    # checked above).
    path = tmp_path / 'dinov3_convnext_pretrain.pth'
    state = fabricate(**SMALL)
    torch.save(state, path)
    model = MODELS.build(
        dict(
            type='DinoV3ConvNeXt',
            arch=SMALL,
            init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    model.init_weights()
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.replace('norms.3', 'norm')], value), key


def test_weights_of_another_size_are_named():
    state = {
        k: torch.zeros(s)
        for k, s in meta_shapes(*SIZES['small']).items()
    }
    with torch.device('meta'):
        model = DinoV3ConvNeXt('tiny')
    with pytest.raises(ValueError) as err:
        load_convnext_state_dict(model, state, 'dinov3_convnext_small.pth')
    message = str(err.value)
    assert ('dinov3_convnext_small.pth does not fit '
            "DinoV3ConvNeXt(arch='tiny')") in message
    assert "look like ConvNeXt 'small'" in message
    # Stage 3 of the small model has 27 blocks, the tiny's 9: 18 x 9 keys.
    assert 'Unexpected keys (162): stages.2.10.' in message


def test_hf_layout_is_converted_on_load(tmp_path):
    state = fabricate(**SMALL)
    hf = hf_layout(state)
    assert is_hf_convnext_layout(hf) and not is_hf_convnext_layout(state)
    converted = convert_hf_convnext(hf)
    del state['norms.3.weight'], state['norms.3.bias']
    assert converted.keys() == state.keys()
    path = tmp_path / 'model.pth'
    torch.save(hf, path)
    model = DinoV3ConvNeXt(
        SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def reference_features(state: dict, x: torch.Tensor, depths) -> list:
    """ConvNeXt from its formulas, on the weights of ``state``: per stage a
    downsampling (stem: 4x4 conv, then LayerNorm over channels; later:
    LayerNorm over channels, then 2x2 conv), then blocks x + gamma *
    MLP(LN(dwconv7x7(x))) with the MLP C -> 4C -> C and exact GELU; the
    final LayerNorm on the last stage's output. LayerNorms written out."""

    def layer_norm(t, prefix, dim):  # normalise over dimension ``dim``
        mean = t.mean(dim, keepdim=True)
        var = ((t - mean)**2).mean(dim, keepdim=True)
        shape = [1] * t.dim()
        shape[dim] = -1
        return ((t - mean) / torch.sqrt(var + 1e-6) *
                state[prefix + 'weight'].reshape(shape) +
                state[prefix + 'bias'].reshape(shape))

    outputs = []
    for i, depth in enumerate(depths):
        d = f'downsample_layers.{i}.'
        if i == 0:
            x = F.conv2d(x, state[d + '0.weight'], state[d + '0.bias'], 4)
            x = layer_norm(x, d + '1.', 1)
        else:
            x = layer_norm(x, d + '0.', 1)
            x = F.conv2d(x, state[d + '1.weight'], state[d + '1.bias'], 2)
        for j in range(depth):
            b = f'stages.{i}.{j}.'
            y = F.conv2d(
                x,
                state[b + 'dwconv.weight'],
                state[b + 'dwconv.bias'],
                padding=3,
                groups=x.shape[1])
            y = layer_norm(y, b + 'norm.', 1)
            y = torch.einsum('bchw,dc->bdhw', y, state[b + 'pwconv1.weight'])
            y = y + state[b + 'pwconv1.bias'][:, None, None]
            y = 0.5 * y * (1 + torch.erf(y / 2**0.5))
            y = torch.einsum('bchw,dc->bdhw', y, state[b + 'pwconv2.weight'])
            y = y + state[b + 'pwconv2.bias'][:, None, None]
            x = x + state[b + 'gamma'][:, None, None] * y
        outputs.append(layer_norm(x, 'norm.', 1) if i == 3 else x)
    return outputs


def test_features_match_the_convnext_formulas():
    state = fabricate(**SMALL, seed=1)
    model = DinoV3ConvNeXt(SMALL)
    model.load_state_dict({k: v for k, v in state.items() if 'norms' not in k})
    x = torch.randn(2, 3, 70, 99, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        expected = reference_features(state, x, SMALL['depths'])
    # Strides 4-32; remainders dropped (70 x 99 -> 17 x 24 -> ... -> 2 x 3).
    assert [o.shape[2:] for o in ours] == [(17, 24), (8, 12), (4, 6), (2, 3)]
    assert [o.shape[1] for o in ours] == SMALL['dims']
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_out_indices_select_stages_and_frozen_stays_eval():
    model = DinoV3ConvNeXt(SMALL, out_indices=[-1])
    model.train()
    assert not model.training and not any(p.requires_grad
                                          for p in model.parameters())
    (out, ) = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 32, 2, 2)
    tuned = DinoV3ConvNeXt(SMALL, out_indices=[1], frozen=False).train()
    assert tuned.training
    assert tuned(torch.randn(1, 3, 64, 64))[0].requires_grad


def test_matches_transformers_dinov3_convnext():
    """Hugging Face's DINOv3ConvNextModel with the same (converted) weights:
    its normalised patch tokens are our last stage's output."""
    transformers = pytest.importorskip('transformers')
    config = transformers.DINOv3ConvNextConfig(
        hidden_sizes=SMALL['dims'], depths=SMALL['depths'])
    reference = transformers.DINOv3ConvNextModel(config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    model = DinoV3ConvNeXt(SMALL)
    model.load_state_dict(convert_hf_convnext(reference.state_dict()))
    x = torch.randn(1, 3, 96, 128, generator=generator)
    with torch.no_grad():
        tokens = reference(pixel_values=x).last_hidden_state[:, 1:]
        ours = model(x)[3]
    torch.testing.assert_close(
        ours.flatten(2).transpose(1, 2), tokens, rtol=1e-4, atol=1e-4)
