"""Training checkpoints without the frozen backbone, driven by the runner
(the file logic is :mod:`dinov2_seg.checkpoints.frozen_backbone`)."""
import os.path as osp

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

# yapf: disable
from dinov2_seg.checkpoints.frozen_backbone import (BACKBONE_FILE_KEY,
                                                    BACKBONE_SHA256_KEY,
                                                    backbone_file,
                                                    check_backbone_file,
                                                    file_sha256,
                                                    frozen_backbone_keys)
# yapf: enable
from dinov2_seg.checkpoints.safe_loading import local_file


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
            BACKBONE_FILE_KEY:
            filename,
            BACKBONE_SHA256_KEY:
            file_sha256(local_file(filename))
        })

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        if BACKBONE_SHA256_KEY not in meta:
            return
        model = _unwrap(runner.model)
        check_backbone_file(meta, model, _resumed_file(runner))
        if isinstance(runner.model, FullyShardedDataParallel):
            # FSDP loads what the file holds and leaves the rest as it is
            # (the backbone, initialised from its file), without a warning;
            # its parts' state dicts cannot be taken outside the whole's.
            return
        # The runner initialised the backbone from its file before resuming;
        # hand those tensors to the loader so that nothing is missing.
        own = model.state_dict()
        for key in frozen_backbone_keys(model):
            checkpoint['state_dict'].setdefault(key, own[key])


def _resumed_file(runner) -> str:
    """Name of the checkpoint being resumed (mmengine keeps it only in the
    work dir's ``last_checkpoint`` note when it finds it itself)."""
    # Runner has no public accessor for the file it resumes from;
    # ``_load_from`` is private to mmengine, whose version setup.py pins.
    if runner._load_from:
        return runner._load_from
    note = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(note):
        with open(note) as file:
            return file.read().strip()
    return f'the checkpoint resumed in {runner.work_dir}'


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model
