"""EoMT's colour jitter (EoMTColorJitter): torchvision's colour ops on the
same factors give the same image, the draws follow EoMT's probabilities,
ranges and order, and every EoMT config jitters with it."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from helpers.tools import REPO
from mmengine.config import Config

from dinov2_seg.datasets.eomt_color_jitter import EoMTColorJitter, apply_jitter

TORCHVISION_PYTHON = os.environ.get(
    'DINOV2_SEG_TIMM_PYTHON', str(REPO / '.venv-timm' / 'bin' / 'python'))


def test_image() -> np.ndarray:
    """A BGR uint8 image with every kind of pixel the ops treat apart:
    random colours, greys (no hue), saturated primaries, black and white,
    ties between the largest channels."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    image[:4, :, :] = np.arange(48, dtype=np.uint8)[None, :, None] * 5
    image[4:8, :8] = [0, 0, 255]
    image[4:8, 8:16] = [0, 255, 0]
    image[4:8, 16:24] = [255, 0, 0]
    image[4:8, 24:32] = [0, 200, 200]
    image[4:8, 32:40] = [0, 0, 0]
    image[4:8, 40:48] = [255, 255, 255]
    return image


test_image.__test__ = False  # a fixture-like helper, not a test

# Each op alone at both ends of EoMT's ranges and inside them, then
# sequences in both of EoMT's orders.
BRIGHT = 32 / 255
SINGLE = [[(name, factor)] for name, factors in (
    ('brightness', (1 - BRIGHT, 1 + BRIGHT, 1.07)),
    ('contrast', (0.5, 1.5, 0.83)),
    ('saturation', (0.5, 1.5, 1.21)),
    ('hue', (-0.05, 0.05, 0.013, -0.031)),
) for factor in factors]
SEQUENCES = [
    [('brightness', 1.1), ('contrast', 1.4), ('saturation', 0.6),
     ('hue', 0.04)],
    [('brightness', 0.9), ('saturation', 1.3), ('hue', -0.045),
     ('contrast', 0.7)],
    [('saturation', 1.5), ('contrast', 1.5)],
]


@pytest.mark.slow  # torchvision runs in .venv-timm
def test_equals_torchvision_on_the_same_factors(tmp_path):
    assert os.path.isfile(TORCHVISION_PYTHON), (
        f'{TORCHVISION_PYTHON} missing: `make test` sets up .venv-timm '
        '(which has torchvision), or set DINOV2_SEG_TIMM_PYTHON')
    np.random.seed(0)
    drawn = [EoMTColorJitter().draw() for _ in range(12)]
    plans = SINGLE + SEQUENCES + [plan for plan in drawn if plan]
    bgr = test_image()
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)
    torch.save(dict(images=[rgb], plans=plans), tmp_path / 'cases.pt')
    subprocess.run([
        TORCHVISION_PYTHON,
        str(REPO / 'tests' / 'helpers' / 'color_jitter_reference.py'),
        str(tmp_path / 'cases.pt'),
        str(tmp_path / 'torchvision.pt')
    ],
                   check=True,
                   timeout=300)
    reference = torch.load(tmp_path / 'torchvision.pt')
    differences = []
    for plan, want in zip(plans, reference):
        got = apply_jitter(bgr, plan)
        want = want.permute(1, 2, 0).numpy()[..., ::-1]
        assert got.dtype == np.uint8 and got.shape == bgr.shape
        diff = np.abs(got.astype(int) - want.astype(int))
        differences.append((diff.max(), (diff > 0).mean()))
        # Not vacuous: every plan changes the image.
        assert np.abs(got.astype(int) - bgr).max() > 2, plan
    worst = max(d for d, _ in differences)
    share = max(s for _, s in differences)
    print(json.dumps(dict(max_difference=int(worst), max_share=share)))
    assert worst <= 1 and share < 0.001, differences


def test_draws_follow_eomt():
    """EoMT's ``color_jitter``: brightness (p 0.5), then contrast and
    (saturation, hue) in a random order, each op with p 0.5; factors
    uniform in 1 +- 32/255, 1 +- 0.5, 1 +- 0.5 and +-18/360."""
    np.random.seed(0)
    jitter = EoMTColorJitter()
    plans = [jitter.draw() for _ in range(4000)]
    factors = {
        name: []
        for name in ('brightness', 'contrast', 'saturation', 'hue')
    }
    contrast_first = both = 0
    for plan in plans:
        names = [name for name, _ in plan]
        assert len(set(names)) == len(names)
        if 'brightness' in names:
            assert names[0] == 'brightness'
        if 'saturation' in names and 'hue' in names:
            assert names.index('saturation') < names.index('hue')
        others = [n for n in names if n in ('saturation', 'hue')]
        if 'contrast' in names and others:
            both += 1
            contrast_first += names.index('contrast') < names.index(others[0])
        for name, factor in plan:
            factors[name].append(factor)
    for name, (low, high) in dict(
            brightness=(1 - 32 / 255, 1 + 32 / 255),
            contrast=(0.5, 1.5),
            saturation=(0.5, 1.5),
            hue=(-0.05, 0.05)).items():
        values = np.array(factors[name])
        assert abs(len(values) / len(plans) - 0.5) < 0.03, name
        assert low <= values.min() < low + 0.01 * (high - low), name
        assert high - 0.01 * (high - low) < values.max() <= high, name
        assert abs(values.mean() - (low + high) / 2) < 0.03 * (high - low)
    assert abs(contrast_first / both - 0.5) < 0.05


def test_refuses_what_it_cannot_jitter():
    with pytest.raises(ValueError, match='BGR uint8 H x W x 3.*float32'):
        apply_jitter(np.zeros((4, 4, 3), np.float32), [('hue', 0.01)])
    with pytest.raises(ValueError, match='hue_delta=360 degrees'):
        EoMTColorJitter(hue_delta=360)


def eomt_configs() -> list:
    return sorted(
        str(path.relative_to(REPO / 'configs'))
        for path in (REPO / 'configs').rglob('*eomt*.py')
        if '_base_' not in path.parts)


def test_every_eomt_config_jitters_as_eomt():
    """Every EoMT config (DINOv2 and DINOv3) that trains runs
    EoMTColorJitter right after loading, and no PhotoMetricDistortion."""
    checked = []
    for name in eomt_configs():
        cfg = Config.fromfile(str(REPO / 'configs' / name))
        if 'train_dataloader' not in cfg:
            continue
        types = [
            step['type'] for step in cfg.train_dataloader.dataset.pipeline
        ]
        assert 'PhotoMetricDistortion' not in types, name
        assert types[:3] == [
            'LoadImageFromFile', 'DinoLoadAnnotations', 'EoMTColorJitter'
        ], name
        checked.append(name)
    assert {
        'ade20k_vitl14_eomt.py', 'demo_shapes_eomt.py',
        'dinov3/ade20k_vitl16_eomt.py', 'dinov3/demo_shapes_eomt.py',
        'dinov3/ade20k_vit7b16_eomt_fsdp.py'
    } <= set(checked)
