"""DinoV3VisionTransformer equals timm's ``vit_*_patch16_dinov3`` and
transformers' ``DINOv3ViTModel`` (random weights, no download): class token
and patch tokens on a batch of 2 whose sides are not multiples of 16.

timm and transformers run in .venv-timm (timm needs torchvision, which has
no wheel for the main environment's CPU torch), all cases in one
subprocess, started once per module."""
import json
import os
import subprocess

import pytest
import torch
from helpers.dinov3_meta import fabricate_meta_file
from helpers.tools import REPO

from dinov2_seg.models.backbones import (DINOV3_ARCH_SETTINGS,
                                         DinoV3VisionTransformer)

pytestmark = pytest.mark.slow

TIMM_PYTHON = os.environ.get('DINOV2_SEG_TIMM_PYTHON',
                             str(REPO / '.venv-timm' / 'bin' / 'python'))
DEPTH = 2
# Meta's archs at reduced depth: the MLP one and the SwiGLU one.
ARCHS = {
    'vits16': dict(DINOV3_ARCH_SETTINGS['vits16'], depth=DEPTH),
    'vits16plus': dict(DINOV3_ARCH_SETTINGS['vits16plus'], depth=DEPTH),
}
# case: (kind, our arch, timm model or transformers config)
CASES = {
    # Meta's file, read by timm's own converter: does our model compute
    # what timm computes from the same file?
    'meta_file-mlp': ('meta_file', 'vits16', 'vit_small_patch16_dinov3_qkvb'),
    'meta_file-swiglu':
    ('meta_file', 'vits16plus', 'vit_small_plus_patch16_dinov3_qkvb'),
    # timm's own state_dicts (with and without qkv bias) through our
    # converter.
    'timm_export-mlp': ('timm_export', 'vits16', 'vit_small_patch16_dinov3'),
    'timm_export-swiglu':
    ('timm_export', 'vits16plus', 'vit_small_plus_patch16_dinov3_qkvb'),
    # transformers' state_dicts, as a module saves them and as on the Hub.
    'hf_export-mlp': ('hf_export', 'vits16',
                      dict(intermediate_size=1536, hidden_act='gelu')),
    'hf_export-swiglu':
    ('hf_export', 'vits16plus',
     dict(intermediate_size=1536, use_gated_mlp=True, hidden_act='silu')),
}


def hf_config(extra: dict) -> dict:
    return dict(
        hidden_size=384,
        num_hidden_layers=DEPTH,
        num_attention_heads=6,
        num_register_tokens=4,
        layer_norm_eps=1e-5,
        **extra)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """Runs every case in .venv-timm once; returns the folder of the files
    and the outputs per case."""
    assert os.path.isfile(TIMM_PYTHON), (
        f'{TIMM_PYTHON} missing: `make test` sets up .venv-timm '
        '(tools/setup_timm_env.sh), or set DINOV2_SEG_TIMM_PYTHON')
    folder = tmp_path_factory.mktemp('dinov3_parity')
    x = torch.randn(2, 3, 70, 100, generator=torch.Generator().manual_seed(0))
    torch.save(x, folder / 'x.pt')
    cases = {}
    for name, (kind, arch, source) in CASES.items():
        case = dict(kind=kind)
        if kind == 'meta_file':
            case.update(
                timm_model=source,
                settings=dict(depth=DEPTH),
                checkpoint=str(folder / f'{name}.pth'))
            fabricate_meta_file(arch, case['checkpoint'], depth=DEPTH)
        elif kind == 'timm_export':
            case.update(
                timm_model=source,
                settings=dict(depth=DEPTH),
                state=str(folder / f'{name}.pth'))
        else:
            case.update(
                config=hf_config(source),
                state=str(folder / f'{name}.pth'),
                hub_dir=str(folder / name))
        cases[name] = case
    with open(folder / 'cases.json', 'w') as f:
        json.dump(dict(input=str(folder / 'x.pt'), cases=cases), f)
    subprocess.run([
        TIMM_PYTHON,
        str(REPO / 'tests' / 'helpers' / 'dinov3_timm_reference.py'),
        str(folder / 'cases.json'),
        str(folder / 'out.pt')
    ],
                   check=True,
                   timeout=300)
    return folder, x, torch.load(folder / 'out.pt')


def ours(arch: str, checkpoint) -> DinoV3VisionTransformer:
    model = DinoV3VisionTransformer(
        arch=ARCHS[arch],
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model.init_weights()
    return model


@pytest.mark.parametrize('case', sorted(CASES))
def test_tokens_equal_the_reference(reference, case):
    folder, x, outputs = reference
    kind, arch, _ = CASES[case]
    checkpoints = [folder / f'{case}.pth']
    if kind == 'hf_export':
        checkpoints.append(folder / case / 'model.safetensors')
    want = outputs[case]
    assert want['patches'].shape == (2, 4 * 6, 384)
    for checkpoint in checkpoints:
        with torch.no_grad():
            model = ours(arch, checkpoint)
            tokens = model.intermediate_tokens(x)[0][-1]
            feats = model(x)[-1]
        torch.testing.assert_close(
            tokens[:, 0], want['cls'], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            tokens[:, 5:], want['patches'], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            feats,
            want['patches'].reshape(2, 4, 6, 384).permute(0, 3, 1, 2),
            atol=1e-4,
            rtol=1e-4)
