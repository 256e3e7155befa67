"""Strict loading of DINOv2 and DINOv3 backbone weights, from a file or from
a model in memory.

The released ``dinov2_<arch>_pretrain.pth`` and
``dinov3_<arch>_pretrain_<data>-<hash>.pth`` files are plain state_dicts
whose keys are exactly the backbone's parameter and buffer names, so they
need no renaming; timm and Hugging Face weights are converted to that layout
first (foreign.py, foreign_dinov3.py). What this module adds is checking: every tensor must be used,
none missing, and weights of another size are an error naming both shapes.
A file and a module go through the same :func:`load_backbone_state_dict`.
"""
from typing import Callable, List, Mapping, Optional

import torch
from torch import nn

from dinov2_seg.arch_settings import DINOV3_ARCH_SETTINGS
from .arch_detection import describe_arch
from .foreign import to_official_layout
from .foreign_dinov3 import to_dinov3_layout
from .reading import extract_state_dict, read_checkpoint
from .strict_check import check_state_dict


def _hints(looks_like: Optional[str], dinov3: bool) -> List[str]:
    if not looks_like:
        return []
    file_is_dinov3 = looks_like in DINOV3_ARCH_SETTINGS or \
        looks_like.startswith('no DINOv3 preset')
    if file_is_dinov3:
        hints = [
            f'The weights look like arch {looks_like!r}.' if looks_like
            in DINOV3_ARCH_SETTINGS else f'The weights match {looks_like}.'
        ]
    else:
        hints = [f'The weights look like arch {looks_like!r}.']
    if file_is_dinov3 and not dinov3:
        hints.append("They are DINOv3 weights: use model.backbone.type="
                     "'DinoV3VisionTransformer'.")
    elif dinov3 and not file_is_dinov3:
        hints.append("They are DINOv2 weights: use model.backbone.type="
                     "'DinoVisionTransformer'.")
    return hints


def load_backbone_state_dict(
        backbone: nn.Module,
        state_dict: Mapping,
        source: str,
        keep: Optional[Callable[[str], bool]] = None) -> None:
    """Load DINOv2 or DINOv3 weights (Meta's, timm's or Hugging Face's
    layout, possibly wrapped in a checkpoint dict or a model with a task
    head) into ``backbone`` strictly.

    Args:
        backbone: The DINOv2 or DINOv3 backbone to fill (a DINOv3 one says
            so by its ``checkpoint_layout``, the arch settings that the
            conversion of foreign layouts needs).
        state_dict: The weights read from ``source``: a state_dict, or a
            checkpoint dict wrapping one.
        source: What the weights come from (a file name, a module's class),
            for error messages.
        keep: Selects the keys that take part, on both sides (e.g. only the
            ViT of a ViT-Adapter, which has no use for the final norm).

    Raises:
        ValueError: if any key is missing, unexpected or of another shape; the
            message names ``source``, the configured arch and both shapes.
    """
    state_dict = extract_state_dict(state_dict, source)
    layout = getattr(backbone, 'checkpoint_layout', None)
    dinov3 = bool(layout) and layout.get('family') == 'dinov3'
    if dinov3:
        state_dict = to_dinov3_layout(state_dict, layout)
    else:
        state_dict = to_official_layout(state_dict)
    target = (f'{type(backbone).__name__}'
              f'(arch={getattr(backbone, "arch", "?")!r})')
    hints = _hints(describe_arch(state_dict), dinov3)
    expected = backbone.state_dict()
    if keep is not None:
        expected = {k: v for k, v in expected.items() if keep(k)}
        state_dict = {k: v for k, v in state_dict.items() if keep(k)}
    check_state_dict(expected, state_dict, source, target, hints)
    with torch.no_grad():
        backbone.load_state_dict(state_dict, strict=keep is None)


def load_backbone_checkpoint(
        backbone: nn.Module,
        filename: str,
        keep: Optional[Callable[[str], bool]] = None) -> None:
    """Load a DINOv2 or DINOv3 backbone file (path or URL) into
    ``backbone`` strictly; see :func:`load_backbone_state_dict`."""
    load_backbone_state_dict(backbone, read_checkpoint(filename), filename,
                             keep)
