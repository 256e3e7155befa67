"""Backbone weights taken from a DINOv2 model already in memory: Meta's
torch.hub model, timm's ``vit_*_patch14*_dinov2`` or transformers'
``Dinov2Model`` (also inside a model with a task head). Its state_dict is
converted and checked exactly as a file of the same layout would be."""
import torch
from torch import nn

from .foreign import to_official_layout


def load_backbone_from_module(backbone: nn.Module, module: nn.Module) -> None:
    """Copy ``module``'s weights into ``backbone`` strictly (Meta's, timm's
    or Hugging Face's parameter names).

    Raises:
        ValueError: if a tensor is missing, unexpected or of another shape;
            the message names the module's class, the configured arch and
            both shapes.
    """
    # Imported here rather than from the submodules, whose split may change;
    # the package's names are its interface.
    from dinov2_seg.checkpoints import (check_state_dict, describe_arch,
                                        extract_state_dict)
    source = f'the {type(module).__module__}.{type(module).__name__} module'
    state_dict = to_official_layout(
        extract_state_dict(module.state_dict(), source))
    target = (f'{type(backbone).__name__}'
              f'(arch={getattr(backbone, "arch", "?")!r})')
    looks_like = describe_arch(state_dict)
    hints = [f'The module looks like arch {looks_like!r}.'
             ] if looks_like else []
    check_state_dict(backbone.state_dict(), state_dict, source, target, hints)
    with torch.no_grad():
        backbone.load_state_dict(state_dict)
