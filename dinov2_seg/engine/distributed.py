"""Distributed runs of mmengine's runner on machines without CUDA, and the
process-group housekeeping of tools/train.py and tools/test.py."""
import logging
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for processes without CUDA: torch's
    SyncBatchNorm has no CPU kernel (and DDP refuses it on CPU), so the
    model's SyncBN layers become BN, with statistics per process."""

    def __init__(self, module: nn.Module, **kwargs):
        if any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
            print_log(
                'No CUDA: SyncBN layers run as BN for this CPU run (torch '
                'has no CPU SyncBatchNorm); statistics are per process.',
                logger='current',
                level=logging.WARNING)
        super().__init__(module=revert_sync_batchnorm(module), **kwargs)


def prepare_cpu_distributed(cfg: Config) -> None:
    """Make ``--launcher pytorch`` work on machines without CUDA.

    mmengine assumes GPUs for data parallelism: its init_dist calls
    ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids``, and
    torch's SyncBatchNorm has no CPU kernel. On CPU we therefore start the
    gloo process group ourselves (mmengine then skips its own) and wrap the
    model in :class:`CPUDistributedDataParallel` (no device ids, SyncBN
    reverted to BN).
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def shutdown_distributed() -> None:
    """Tear the process group down before interpreter exit; otherwise gloo's
    threads can abort a rank that finished first (SIGABRT, 'terminate called
    without an active exception') and fail a run whose work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def set_local_rank(local_rank: int) -> None:
    """``torch.distributed.launch`` passes --local-rank instead of setting
    LOCAL_RANK; mmengine reads the environment."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))
