"""Config handling shared by tools/train.py and tools/test.py."""
import copy
import logging
import os
import os.path as osp
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from dinov2_seg.engine.vis_backends import expand_vis_backends


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options`` and choose the work dir as
    mmseg's tools do (CLI, then the config's ``work_dir``, then
    ``work_dirs/<config name>``)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Config file {path} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    expand_vis_backends(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


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


def select_tta_scales(cfg: Config, config_path: str) -> list:
    """The TTA pipeline with its first ``cfg.tta_scale_count`` scales (the
    official notebook's HEAD_SCALE_COUNT; all when unset)."""
    if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
        raise KeyError(
            f'{config_path} defines no tta_pipeline/tta_model, so it has no '
            'multi-scale flip test (--tta, --scales); the official linear '
            'recipe has none, the ms configs (e.g. '
            'configs/ade20k_vits14_ms.py) have it')
    pipeline = copy.deepcopy(cfg.tta_pipeline)
    resizes = pipeline[-1].transforms[0]
    count = cfg.get('tta_scale_count') or len(resizes)
    if not 1 <= count <= len(resizes):
        raise ValueError(f'tta_scale_count={count}: {config_path} has '
                         f'{len(resizes)} test scales, choose 1..'
                         f'{len(resizes)}')
    pipeline[-1].transforms[0] = resizes[:count]
    return pipeline
