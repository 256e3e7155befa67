"""Backbone weights taken from a DINOv2 model already in memory: Meta's
torch.hub model, timm's ``vit_*_patch14*_dinov2`` or transformers'
``Dinov2Model`` (also inside a model with a task head). Its state_dict goes
through the same conversion and strict check as a file of the same layout
(:func:`~dinov2_seg.checkpoints.backbone.load_backbone_state_dict`)."""
from torch import nn

from .backbone import load_backbone_state_dict


def load_backbone_from_module(backbone: nn.Module, module: nn.Module) -> None:
    """Copy ``module``'s weights into ``backbone`` strictly.

    Raises:
        ValueError: if a tensor is missing, unexpected or of another shape;
            the message names the module's class, the configured arch and
            both shapes.
    """
    source = f'the {type(module).__module__}.{type(module).__name__} module'
    load_backbone_state_dict(backbone, module.state_dict(), source)
