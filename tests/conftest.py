import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dinov2_seg.datasets  # noqa: F401  (registers transforms)
import dinov2_seg.models  # noqa: F401  (registers modules; safe globals)
from mmseg.utils import register_all_modules

REPO = Path(__file__).resolve().parents[1]

# A small custom architecture for tests that only need *a* DINOv2: the same
# code paths as the presets at a fraction of the cost.
TINY_ARCH = dict(
    embed_dim=48,
    depth=4,
    num_heads=3,
    ffn='mlp',
    num_register_tokens=0,
    interpolate_offset=0.1,
    interpolate_antialias=False)
# ... and one with ViT-g's SwiGLU FFN, for the ViT-Adapter and Meta's
# Mask2Former layout.
TINY_SWIGLU_ARCH = dict(TINY_ARCH, embed_dim=64, num_heads=2, ffn='swiglu')

register_all_modules(init_default_scope=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> Path:
    """A small procedural dataset in the ADE20K layout."""
    from dinov2_seg.datasets import generate_shapes_dataset
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(
        str(root), num_train=8, num_val=4, size=(90, 125), seed=1)
    return root


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> Path:
    """A small dataset in the VOC 2012 layout (palette PNG labels with 255
    borders; train and val splits of 3 images)."""
    from fabricate import fabricate_voc_dataset
    root = tmp_path_factory.mktemp('VOC2012')
    fabricate_voc_dataset(root)
    return root


@pytest.fixture
def python() -> str:
    return sys.executable


def run(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python ARGS...`` from the repository root, as a user runs the
    tools."""
    return subprocess.run([sys.executable, *map(str, args)],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def check(result: subprocess.CompletedProcess) -> str:
    """The output of a run that must have succeeded."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output
