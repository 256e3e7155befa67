"""Training checkpoints without the frozen backbone.

A frozen backbone never changes during training, so saving it in every
checkpoint only repeats its file (4.4 GB for ViT-g). The checkpoints of a
run whose backbone is frozen and loaded from a file hold the trainable
tensors and the optimizer state, plus the backbone file's name and SHA-256
in ``meta``; whoever loads them rebuilds the backbone from ``init_cfg`` and
refuses a file with another hash. A backbone that trains, or that is not
loaded from a file (random initialisation), is saved whole.

The file logic lives here; the runner applies it through
:class:`dinov2_seg.engine.hooks.FrozenBackboneCheckpointHook`.
"""
import hashlib
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from torch import nn

from .safe_loading import local_file

BACKBONE_FILE_KEY = 'backbone_file'
# The modules that FSDP and activation checkpointing put around the blocks
# they wrap appear in named_parameters() but not in the state dicts that
# FSDP writes (they hold the unwrapped model's names).
WRAPPER_MODULE_NAMES = ('_fsdp_wrapped_module.', '_checkpoint_wrapped_module.')
BACKBONE_SHA256_KEY = 'backbone_sha256'
_HASHES: Dict[Tuple[str, int, float], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) for the process."""
    stat = os.stat(path)
    key = (osp.realpath(path), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, 'rb') as file:
            for block in iter(lambda: file.read(1 << 24), b''):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def backbone_file(segmentor: nn.Module) -> Optional[str]:
    """The file the backbone's ``init_cfg`` loads, if any."""
    init_cfg = getattr(segmentor.backbone, 'init_cfg', None) or {}
    if init_cfg.get('type') != 'Pretrained':
        return None
    return init_cfg.get('checkpoint')


def frozen_backbone_keys(segmentor: nn.Module) -> List[str]:
    """State-dict keys that a checkpoint can leave to the backbone file:
    the frozen parameters of a backbone loaded from a file (for a
    ViT-Adapter, its ViT; the adapter trains and is kept)."""
    if backbone_file(segmentor) is None or not getattr(segmentor.backbone,
                                                       'frozen', False):
        return []
    return [
        f'backbone.{state_dict_name(name)}'
        for name, param in segmentor.backbone.named_parameters()
        if not param.requires_grad
    ]


def state_dict_name(name: str) -> str:
    """A parameter's name in the state dict: without the wrapper modules
    of FSDP and activation checkpointing."""
    for wrapper in WRAPPER_MODULE_NAMES:
        name = name.replace(wrapper, '')
    return name


def check_backbone_file(meta: dict, segmentor: nn.Module,
                        checkpoint: str) -> None:
    """Refuse to pair a head-only ``checkpoint`` with a backbone file other
    than the one it was trained on."""
    trained_on = meta[BACKBONE_FILE_KEY]
    configured = backbone_file(segmentor)
    if configured is None:
        raise ValueError(
            f'{checkpoint} holds no backbone weights: it was trained on the '
            f'frozen backbone file {trained_on}, but '
            'model.backbone.init_cfg names no file; set '
            f'model.backbone.init_cfg.checkpoint={trained_on}')
    # A URL not downloaded yet is fetched now, as init_weights would.
    path = local_file(configured)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{checkpoint} needs its backbone file {trained_on} '
            f'(model.backbone.init_cfg.checkpoint={configured}), which does '
            'not exist')
    found = file_sha256(path)
    if found != meta[BACKBONE_SHA256_KEY]:
        raise ValueError(
            f'{checkpoint} was trained on the frozen backbone file '
            f'{trained_on} (sha256 {meta[BACKBONE_SHA256_KEY]}), but '
            f'model.backbone.init_cfg.checkpoint is {configured} (sha256 '
            f'{found}): a different file. Point init_cfg.checkpoint at the '
            'file the run used.')
