"""What a fixed window size makes constant, frozen while exporting.

The exported graph takes windows of one size, so everything that depends
only on that size is a constant of the graph. Three parts compute such
values from the input's shape in ways the exporter cannot or should not
trace:

- DINOv2's positional embedding, resized bicubically from the pretraining
  grid with scale factors computed from the input shape: traced, it would
  become Resize nodes that ONNX Runtime does not compute as torch does
  (border handling; antialiasing of the register models);
- DINOv3's RoPE sine/cosine tables of the patch grid (a cache keyed on the
  buffer's storage, which the exporter's fake tensors have none of);
- the level shapes of multi-scale deformable attention (ViT-Adapter,
  Meta's DINOv3 adapter, Mask2Former's pixel decoder), carried as tensors
  whose values the exporter does not know (:mod:`.static_levels`).

:func:`window_constants` runs the network once in eager mode on an example
batch of windows, records those values, and while the export traces the
network hands the recorded ones back, so that they enter the graph as
constants: the numbers PyTorch computes for that window size.
"""
import contextlib
from typing import Callable, Dict, Iterator, List

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops import multi_scale_deform_attn as mmcv_msda
from torch import Tensor, nn

from dinov2_seg.models.backbones.dinov2 import DinoViTBase
from dinov2_seg.models.backbones.dinov3_layers import RopePositionEmbedding
from dinov2_seg.models.deformable_attention import pytorch_kernel
from .static_levels import static_level_shapes


@contextlib.contextmanager
def _replaced(owner: object, name: str, value: object) -> Iterator[None]:
    """``owner.name = value`` for the duration; an instance attribute is
    deleted afterwards (its class's method shows again)."""
    had_own = isinstance(owner, nn.Module) and name in vars(owner)
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if isinstance(owner, nn.Module) and not had_own:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)


def _recording(compute: Callable, table: Dict, key: Callable) -> Callable:
    """``compute`` that stores each result in ``table`` under ``key(args)``
    while recording, and afterwards returns the stored one (a real tensor
    seen by the tracer: a constant)."""

    def frozen(*args):
        name = key(*args)
        if name not in table:
            with torch.no_grad():
                table[name] = compute(*args)
        return table[name]

    return frozen


@contextlib.contextmanager
def window_constants(network: nn.Module,
                     example: Tensor) -> Iterator[List[str]]:
    """Freeze the window-size constants of ``network`` (see the module
    docstring) for inputs shaped like ``example``; yields the names of
    what was frozen (for the export log)."""
    frozen: List[str] = []
    with contextlib.ExitStack() as stack:
        for name, module in network.named_modules():
            if isinstance(module, DinoViTBase):
                stack.enter_context(
                    _replaced(
                        module, 'interpolate_pos_embed',
                        _recording(module.interpolate_pos_embed, {},
                                   lambda grid: tuple(grid))))
                frozen.append(f'{name}: positional embedding')
            elif isinstance(module, RopePositionEmbedding):
                stack.enter_context(
                    _replaced(
                        module, 'forward',
                        _recording(module._tables, {},
                                   lambda grid: tuple(grid))))
                frozen.append(f'{name}: RoPE tables')
        # Float32 already: the kernel without deformable_attention.py's
        # autocast guard (a context the exporter would have to trace).
        stack.enter_context(
            _replaced(mmcv_msda, 'multi_scale_deformable_attn_pytorch',
                      pytorch_kernel))
        stack.enter_context(static_level_shapes())
        with torch.no_grad():
            network(example)  # records the constants
        if any(
                isinstance(m, MultiScaleDeformableAttention)
                for m in network.modules()):
            frozen.append('deformable attention: level shapes')
        yield frozen
