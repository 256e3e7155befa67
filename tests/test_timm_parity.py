"""Our backbone equals timm's DINOv2 implementation on the same weights."""
import os
import subprocess

import pytest
import torch

from conftest import REPO
from dinov2_seg.models.backbones import DinoVisionTransformer
from fabricate import fabricate_official_file

TIMM_PYTHON = os.environ.get('DINOV2_SEG_TIMM_PYTHON',
                             str(REPO / '.venv-timm' / 'bin' / 'python'))


@pytest.mark.parametrize('arch,timm_name',
                         [('vits14', 'vit_small_patch14_dinov2'),
                          ('vits14_reg4', 'vit_small_patch14_reg4_dinov2')])
def test_features_equal_timm(tmp_path, arch, timm_name):
    assert os.path.isfile(TIMM_PYTHON), (
        f'{TIMM_PYTHON} missing: `make test` sets up .venv-timm (timm needs '
        'a torch with a matching torchvision), or set DINOV2_SEG_TIMM_PYTHON')
    checkpoint = tmp_path / f'dinov2_{arch}_pretrain.pth'
    fabricate_official_file(arch, checkpoint)
    x = torch.randn(2, 3, 61, 95, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / 'x.pt')
    subprocess.run([
        TIMM_PYTHON,
        str(REPO / 'tests' / 'timm_reference.py'),
        str(checkpoint), timm_name,
        str(tmp_path / 'x.pt'),
        str(tmp_path / 'timm.pt'), '8,9,10,11'
    ],
                   check=True,
                   timeout=300)
    reference = torch.load(tmp_path / 'timm.pt')

    model = DinoVisionTransformer(
        arch=arch,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    with torch.no_grad():
        ours = model(x)
    assert len(ours) == len(reference) == 4
    for got, want in zip(ours, reference):
        assert got.shape == want.shape == (2, 384, 5, 7)
        assert (got - want).abs().max() <= 1e-4
