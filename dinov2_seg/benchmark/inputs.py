"""What a benchmark runs on: the config's segmentor with random (or given)
weights, and synthetic images through its test pipeline."""
import copy
from typing import Optional, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmseg.registry import MODELS
from torch import nn

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.datasets.pipelines import without_annotations


def window_size(cfg: Config) -> Tuple[int, int]:
    crop = cfg.model.get('test_cfg', {}).get('crop_size')
    if crop is None:
        crop = cfg.model.data_preprocessor.get('size') or (512, 512)
    return tuple(crop)


def build_for_benchmark(cfg: Config, device: str,
                        checkpoint: Optional[str]) -> nn.Module:
    """The config's segmentor in eval mode; random weights unless a
    checkpoint is given (benchmarks need no downloaded file). SyncBN is
    built as BN: a benchmark runs in one process."""
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('pretrained', None)
    # Built (and randomly initialised) on the device: seconds instead of a
    # minute for ViT-g on a CPU.
    with torch.device(device):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if checkpoint:
        load_segmentor_checkpoint(model, checkpoint)
    return model.to(device).eval()


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image with gradients and noise (varied predictions)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 0.7, cols * 0.5, (rows + cols) * 0.3], -1)
    return np.clip(base % 256 + rng.normal(0, 20, base.shape), 0,
                   255).astype(np.uint8)


def test_batch(pipeline: list, size: Tuple[int, int], batch: int) -> dict:
    steps = copy.deepcopy(without_annotations(pipeline))
    steps[0]['type'] = 'LoadImageFromNDArray'
    transform = Compose(steps)
    return pseudo_collate([
        transform(dict(img=synthetic_image(*size, seed=i)))
        for i in range(batch)
    ])
