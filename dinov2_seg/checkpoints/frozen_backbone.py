"""Training checkpoints without the frozen backbone.

A frozen backbone never changes during training, so saving it in every
checkpoint only repeats its file (4.4 GB for ViT-g). The checkpoints of a
run whose backbone is frozen and loaded from a file hold the trainable
tensors and the optimizer state, plus the backbone file's name and SHA-256
in ``meta``; whoever loads them rebuilds the backbone from ``init_cfg`` and
refuses a file with another hash. A backbone that trains, or that is not
loaded from a file (random initialisation), is saved whole.
"""
import hashlib
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
# mmengine's root registry: found from the mmseg scope too, and importing
# dinov2_seg (light tools) then needs neither mmseg nor mmcv.
from mmengine.registry import HOOKS
from torch import nn

from .safe_loading import local_file

BACKBONE_FILE_KEY = 'backbone_file'
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
    if backbone_file(segmentor) is None or not getattr(
            segmentor.backbone, 'frozen', False):
        return []
    return [
        f'backbone.{name}'
        for name, param in segmentor.backbone.named_parameters()
        if not param.requires_grad
    ]


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


@HOOKS.register_module()
class FrozenBackboneCheckpointHook(Hook):
    """Leave a frozen, file-initialised backbone out of the checkpoints
    (name and SHA-256 of its file go into ``meta``), and restore it from
    that file on ``--resume``.

    mmengine saves ``model.state_dict()`` whole; a hook on the checkpoint
    dict is its way to change what is written, so the model and the
    optimizer stay untouched.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _unwrap(runner.model)
        keys = frozen_backbone_keys(model)
        if not keys:
            return
        state_dict = checkpoint['state_dict']
        for key in keys:
            state_dict.pop(key, None)
        filename = backbone_file(model)
        checkpoint.setdefault('meta', {}).update({
            BACKBONE_FILE_KEY: filename,
            BACKBONE_SHA256_KEY: file_sha256(local_file(filename))
        })

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        if BACKBONE_SHA256_KEY not in meta:
            return
        model = _unwrap(runner.model)
        check_backbone_file(meta, model, _resumed_file(runner))
        # The runner initialised the backbone from its file before resuming;
        # hand those tensors to the loader so that nothing is missing.
        own = model.state_dict()
        for key in frozen_backbone_keys(model):
            checkpoint['state_dict'].setdefault(key, own[key])


def _resumed_file(runner) -> str:
    """Name of the checkpoint being resumed (mmengine keeps it only in the
    work dir's ``last_checkpoint`` note when it finds it itself)."""
    if runner._load_from:
        return runner._load_from
    note = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(note):
        with open(note) as file:
            return file.read().strip()
    return f'the checkpoint resumed in {runner.work_dir}'


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model
