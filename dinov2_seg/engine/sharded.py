"""Sharded training (FSDP) of the large backbones with mmengine's
FlexibleRunner and FSDPStrategy.

A config opts in with a top-level ``strategy`` (``configs/_base_/fsdp.py``
holds the project's settings); ``tools/train.py`` then builds mmengine's
:class:`~mmengine.runner.FlexibleRunner` instead of its Runner. What the
project adds to mmengine's FSDP:

- :func:`dino_block_wrap_policy`: one FSDP unit per transformer block of
  the DINOv2 and DINOv3 ViTs (parameters, gradients and optimiser state of
  a block live sharded, gathered only while that block runs);
- :func:`dino_block_checkpoint_check`: which modules mmengine's
  ``activation_checkpointing`` recomputes in the backward pass (the same
  blocks);
- :class:`DinoFullyShardedDataParallel`: mmengine's FSDP wrapper that
  refuses a model without such blocks (it would be one unsharded unit) and
  runs on machines without CUDA (gloo);
- :class:`DinoFSDPStrategy`: gradient norm clipping by the norm of the
  whole model's gradient (mmengine's optimizer wrappers clip each
  process's shard by that shard's norm), and resume on torch >= 2.1.
"""
import dataclasses
import logging
import warnings
from typing import Callable, Optional, Tuple, Type, Union

import torch
from mmengine._strategy import FSDPStrategy
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.model import MMFullyShardedDataParallel, revert_sync_batchnorm
from mmengine.optim import BaseOptimWrapper, OptimWrapper, OptimWrapperDict
from mmengine.registry import FUNCTIONS, MODEL_WRAPPERS, STRATEGIES
from mmengine.runner import FlexibleRunner
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import \
    CheckpointWrapper
from torch.distributed.fsdp import FullyShardedDataParallel

from dinov2_seg.models.backbones.dinov2_layers import Block as DinoV2Block
from dinov2_seg.models.backbones.dinov3_layers import Block as DinoV3Block
from .console import filter_console, hide_library_noise

# The transformer blocks that become FSDP units and are recomputed in the
# backward pass: everything of a ViT backbone but the patch embedding,
# the tokens and the final norms (a few MB even for the 7B).
SHARDED_BLOCKS: Tuple[Type[nn.Module], ...] = (DinoV2Block, DinoV3Block)


@FUNCTIONS.register_module()
def dino_block_wrap_policy(module: nn.Module, recurse: bool,
                           nonwrapped_numel: int) -> bool:
    """torch FSDP auto-wrap policy: every DINOv2/DINOv3 transformer block
    is its own FSDP unit; the rest (patch embedding, head) stays in the
    root unit."""
    if recurse:
        return True
    return isinstance(module, SHARDED_BLOCKS)


@FUNCTIONS.register_module()
def dino_block_checkpoint_check(module: nn.Module) -> bool:
    """``check_fn`` of mmengine's ``activation_checkpointing``: recompute
    the transformer blocks (the FSDP units of
    :func:`dino_block_wrap_policy`) in the backward pass."""
    return isinstance(module, SHARDED_BLOCKS)


def count_sharded_blocks(model: nn.Module) -> int:
    """How many FSDP units :func:`dino_block_wrap_policy` finds."""
    return sum(isinstance(m, SHARDED_BLOCKS) for m in model.modules())


@MODEL_WRAPPERS.register_module()
class DinoFullyShardedDataParallel(MMFullyShardedDataParallel):
    """mmengine's FSDP wrapper for the project's segmentors.

    - A model without DINOv2/DINOv3 transformer blocks (a ConvNeXt
      backbone, say) is refused with the reason: the block policy would
      leave the whole model in one unit, gathered on every process, which
      saves no memory over DDP.
    - Without CUDA: mmengine's FSDPStrategy passes
      ``device_id=LOCAL_RANK``, a CUDA index, which torch reads as that
      CUDA device (and without any ``device_id`` torch's FSDP refuses a
      CPU model: "needs a non-CPU accelerator"). The wrapper is where that
      argument arrives, so it becomes ``torch.device('cpu')`` here (the
      model stays on CPU, gloo reduces the gradients). torch's
      SyncBatchNorm has no CPU kernel, so SyncBN layers run as BN, with
      statistics per process, as in
      :class:`~dinov2_seg.engine.distributed.CPUDistributedDataParallel`.
    """

    def __init__(self,
                 module: nn.Module,
                 device_id: Union[int, torch.device, None] = None,
                 **kwargs):
        if count_sharded_blocks(module) == 0:
            raise ValueError(
                'FSDP (strategy=FSDPStrategy) shards the transformer blocks '
                f'of the DINOv2/DINOv3 ViTs ({_block_names()}), and '
                f'{type(module).__name__} with backbone '
                f'{_backbone_name(module)} has none: the whole model would '
                'be one FSDP unit, gathered whole on every process, which '
                'saves no memory. Train it with plain DDP: drop `strategy` '
                '(and configs/_base_/fsdp.py) from the config.')
        if not torch.cuda.is_available():
            device_id = torch.device('cpu')
            if any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
                print_log(
                    'No CUDA: SyncBN layers run as BN for this CPU run '
                    '(torch has no CPU SyncBatchNorm); statistics are per '
                    'process.',
                    logger='current',
                    level=logging.WARNING)
                module = revert_sync_batchnorm(module)
        super().__init__(module=module, device_id=device_id, **kwargs)
        print_log(
            f'FSDP: {count_sharded_blocks(module)} transformer blocks '
            f'sharded over {self.world_size} processes '
            f'({self.sharding_strategy.name}).',
            logger='current')

    @staticmethod
    def set_state_dict_type(module: nn.Module,
                            state_dict_type,
                            state_dict_config=None,
                            optim_state_dict_config=None):
        """FSDP's ``set_state_dict_type``, without CUDA with
        ``offload_to_cpu`` off: the parameters are on the CPU already, and
        torch 2.13's offload of CPU parameters hands back freed memory (the
        full state dict's clone segfaults on rank 0). configs/_base_/
        fsdp.py keeps it on for GPUs, where rank 0 must not gather the
        whole model in device memory."""
        if not torch.cuda.is_available():
            state_dict_config, optim_state_dict_config = (
                dataclasses.replace(config, offload_to_cpu=False) if getattr(
                    config, 'offload_to_cpu', False) else config
                for config in (state_dict_config, optim_state_dict_config))
        with warnings.catch_warnings():
            # torch deprecates this API for its distributed checkpoint one;
            # mmengine 0.10 calls it, so a user cannot act on the warning.
            warnings.filterwarnings(
                'ignore', category=FutureWarning, message='.*state_dict_type')
            return FullyShardedDataParallel.set_state_dict_type(
                module, state_dict_type, state_dict_config,
                optim_state_dict_config)


# What FSDP's clip_grad_norm_ takes of a config's clip_grad.
_FSDP_CLIP_KEYS = ('max_norm', 'norm_type')


def clip_by_global_norm(wrapper: OptimWrapper,
                        model: FullyShardedDataParallel) -> Callable:
    """``wrapper``'s gradient clipping for a model sharded by FSDP: FSDP's
    ``clip_grad_norm_`` (the norm of every process's shards together,
    all-reduced), logged as ``grad_norm`` as mmengine logs it.

    Raises:
        ValueError: if ``clip_grad`` holds options other than ``max_norm``
            and ``norm_type``, naming them.
    """
    other = sorted(set(wrapper.clip_grad_kwargs) - set(_FSDP_CLIP_KEYS))
    if other:
        raise ValueError(
            f'optim_wrapper.clip_grad has {other}: under FSDP '
            '(strategy=DinoFSDPStrategy) gradients are clipped by FSDP\'s '
            f'clip_grad_norm_, which takes only {list(_FSDP_CLIP_KEYS)}')

    def clip_grad() -> None:
        # Called on every process, also one whose shard holds no gradient
        # (mmengine's _clip_grad skips those): the norm is a collective.
        total = model.clip_grad_norm_(**wrapper.clip_grad_kwargs)
        wrapper.message_hub.update_scalar(f'train/{wrapper.grad_name}',
                                          float(total))

    return clip_grad


@STRATEGIES.register_module()
class DinoFSDPStrategy(FSDPStrategy):
    """mmengine's FSDPStrategy with gradient clipping by the global norm and
    resume fixed for torch >= 2.1.

    - Clipping: mmengine's optimizer wrappers clip with
      ``torch.nn.utils.clip_grad_norm_`` over the parameters each process
      holds, which under FSDP are its shards: each process scaled its shard
      by its own norm, so the update differed from the unsharded recipe's
      and the logged ``grad_norm`` was rank 0's shard's. Here a ``norm``
      clip goes through FSDP's ``clip_grad_norm_`` (``value`` clipping acts
      per element, the same sharded or not).
    - Resume: mmengine 0.10.7 calls ``FSDP.optim_state_dict_to_load(
      state_dict, model, optimizer)``, torch 2.0's argument order; torch
      2.1 made it ``(model, optim, optim_state_dict)``, so every resume
      fails ("unhashable type: 'dict'"). Keyword arguments work with both.

    It also logs how many blocks activation checkpointing recomputes.
    """

    def build_optim_wrapper(
            self,
            optim_wrapper,
            model: Optional[nn.Module] = None) -> BaseOptimWrapper:
        built = super().build_optim_wrapper(optim_wrapper, model)
        wrappers = (
            built.optim_wrappers.values() if isinstance(
                built, OptimWrapperDict) else [built])
        for wrapper in wrappers:
            # OptimWrapper(clip_grad=dict(type='norm')) sets clip_func;
            # the config names the wrapper's class, so the strategy, which
            # knows the sharded model, replaces the one method that clips
            # (OptimWrapper._clip_grad) on the built wrapper.
            if (isinstance(model, FullyShardedDataParallel) and getattr(
                    wrapper, 'clip_func', None) is nn.utils.clip_grad_norm_):
                wrapper._clip_grad = clip_by_global_norm(wrapper, model)
        return built

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        wrapped = super()._wrap_model(model)
        if wrapped is not None:
            recomputed = sum(
                isinstance(m, CheckpointWrapper) for m in wrapped.modules())
            print_log(
                f'FSDP: activation checkpointing of {recomputed} blocks.',
                logger='current')
        return wrapped

    def load_optim_state_dict(self, state_dict: dict) -> None:
        optimizer = self.optim_wrapper.optimizer
        optim_state_dict = FullyShardedDataParallel.optim_state_dict_to_load(
            model=self.model, optim=optimizer, optim_state_dict=state_dict)
        self.optim_wrapper.load_state_dict(optim_state_dict)


def _block_names() -> str:
    return ', '.join(f'{c.__module__}.{c.__name__}' for c in SHARDED_BLOCKS)


def _backbone_name(module: nn.Module) -> str:
    backbone = getattr(module, 'backbone', None)
    return type(backbone).__name__ if backbone is not None else '(none)'


def uses_flexible_runner(cfg: Config) -> bool:
    """Whether ``cfg`` asks for a strategy of mmengine's FlexibleRunner
    (``strategy = dict(type=...)``, e.g. FSDPStrategy)."""
    return bool(cfg.get('strategy'))


class QuietConsoleFlexibleRunner(FlexibleRunner):
    """FlexibleRunner with the project's quiet console
    (:class:`~dinov2_seg.engine.console.ConsoleFilter`); its logger is
    built by the strategy, so the filter goes on after the strategy."""

    def build_strategy(self, *args, **kwargs):
        strategy = super().build_strategy(*args, **kwargs)
        filter_console(strategy.logger)
        return strategy


def flexible_runner_for(cfg: Config, verbose: bool = False) -> type:
    """The FlexibleRunner class for a config with ``strategy``: mmengine's
    own when ``verbose`` (or the config's ``verbose``), else the quiet
    console with the progress bar (added to ``cfg.custom_hooks``)."""
    if verbose or cfg.get('verbose', False):
        return FlexibleRunner
    hide_library_noise()
    hooks = cfg.get('custom_hooks') or []
    if not any(h.get('type') == 'DinoProgressBarHook' for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type='DinoProgressBarHook')]
    return QuietConsoleFlexibleRunner


def drop_strategy_for_one_process(cfg: Config) -> None:
    """A config with ``strategy`` run without a launcher (one process):
    nothing to shard over, so mmengine's plain Runner trains it (the same
    numbers as a sharded run of the same global batch); a warning says
    so."""
    kind = cfg.strategy.get('type')
    print_log(
        f'strategy={kind!r} needs a distributed launch (tools/dist_train.sh '
        'CONFIG N, or --launcher pytorch); this one-process run trains '
        "unsharded with mmengine's Runner.",
        logger=MMLogger.get_current_instance(),
        level=logging.WARNING)
    cfg.strategy = None
