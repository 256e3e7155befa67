"""Our backbone equals timm's DINOv2 implementation on the same weights, and
state_dicts saved by timm itself load as Meta's files."""
import json
import os
import subprocess

import pytest
import torch
from helpers.fabricate import fabricate_official_file
from helpers.tools import REPO

from dinov2_seg.models.backbones import ARCH_SETTINGS, DinoVisionTransformer

# Every test runs timm in another interpreter.
pytestmark = pytest.mark.slow

TIMM_PYTHON = os.environ.get('DINOV2_SEG_TIMM_PYTHON',
                             str(REPO / '.venv-timm' / 'bin' / 'python'))


def run_timm(*args) -> None:
    assert os.path.isfile(TIMM_PYTHON), (
        f'{TIMM_PYTHON} missing: `make test` sets up .venv-timm (timm needs '
        'a torch with a matching torchvision), or set DINOV2_SEG_TIMM_PYTHON')
    subprocess.run([
        TIMM_PYTHON,
        str(REPO / 'tests' / 'helpers' / 'timm_reference.py'), *map(str, args)
    ],
                   check=True,
                   timeout=300)


def pretrained(arch, checkpoint, **kwargs) -> DinoVisionTransformer:
    model = DinoVisionTransformer(
        arch=arch,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)),
        **kwargs)
    model.init_weights()
    return model


@pytest.mark.parametrize('arch,timm_name',
                         [('vits14', 'vit_small_patch14_dinov2'),
                          ('vits14_reg4', 'vit_small_patch14_reg4_dinov2')])
def test_features_equal_timm(tmp_path, arch, timm_name):
    checkpoint = tmp_path / f'dinov2_{arch}_pretrain.pth'
    fabricate_official_file(arch, checkpoint)
    x = torch.randn(2, 3, 61, 95, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / 'x.pt')
    run_timm('features', checkpoint, timm_name, tmp_path / 'x.pt',
             tmp_path / 'timm.pt', '8,9,10,11')
    reference = torch.load(tmp_path / 'timm.pt')

    with torch.no_grad():
        ours = pretrained(arch, checkpoint)(x)
    assert len(ours) == len(reference) == 4
    for got, want in zip(ours, reference):
        assert got.shape == want.shape == (2, 384, 5, 7)
        assert (got - want).abs().max() <= 1e-4


# timm models shrunk to 2 blocks and built for 112x112 inputs (an 8x8
# positional grid, so that no resize is involved), with what the state_dict
# then holds in timm's own layout.
SMALL = dict(ARCH_SETTINGS['vits14'], depth=2)
TIMM_CASES = {
    'vits14': ('vit_small_patch14_dinov2', {}, SMALL, {
        'cls_token': (1, 1, 384),
        'pos_embed': (1, 65, 384),
        'blocks.0.mlp.fc1.weight': (1536, 384),
    }),
    'vits14_reg4': ('vit_small_patch14_reg4_dinov2', {},
                    dict(ARCH_SETTINGS['vits14_reg4'], depth=2), {
                        'reg_token': (1, 4, 384),
                        'pos_embed': (1, 64, 384),
                    }),
    # ViT-g's SwiGLU at a small width: timm packs w12/w3 into fc1/fc2.
    'swiglu': ('vit_giant_patch14_dinov2', dict(embed_dim=48, num_heads=3),
               dict(SMALL, embed_dim=48, num_heads=3, ffn='swiglu'), {
                   'blocks.1.mlp.fc1.weight': (256, 48),
                   'blocks.1.mlp.fc2.weight': (48, 128),
               }),
}


@pytest.mark.parametrize('case', TIMM_CASES.values(), ids=TIMM_CASES)
def test_state_dicts_saved_by_timm_give_timms_features(tmp_path, case):
    timm_name, timm_settings, arch, timm_layout = case
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / 'x.pt')
    settings = dict(timm_settings, depth=2, img_size=112)
    run_timm('export', timm_name, json.dumps(settings),
             tmp_path / 'timm_state.pth', tmp_path / 'x.pt',
             tmp_path / 'timm.pt', '0,1')
    state = torch.load(tmp_path / 'timm_state.pth')
    assert 'mask_token' not in state
    for key, shape in timm_layout.items():
        assert tuple(state[key].shape) == shape, key
    reference = torch.load(tmp_path / 'timm.pt')

    model = pretrained(
        arch, tmp_path / 'timm_state.pth', img_size=112, out_indices=[0, 1])
    with torch.no_grad():
        ours = model(x)
    for got, want in zip(ours, reference):
        assert got.shape == want.shape == (2, arch['embed_dim'], 8, 8)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
