"""DINOv3 ConvNeXt weights: Meta's files as they are, Hugging Face's
converted, both loaded strictly.

Meta's ``dinov3_convnext_<size>_pretrain_lvd1689m-<hash>.pth`` files are
plain state_dicts of ``dinov3/models/convnext.py``'s ``ConvNeXt``, whose
names :class:`DinoV3ConvNeXt` keeps: ``downsample_layers.<i>.<k>.*`` (the
stem conv + norm, then norm + 2x2 conv), ``stages.<i>.<j>.{dwconv, norm,
pwconv1, pwconv2, gamma}`` and the final ``norm.*``. Meta's module also
lists that final norm as ``norms.3`` (its per-stage output norms, the first
three being identities), so the files hold ``norms.3.*`` too, a copy of
``norm.*``; it is checked equal and dropped here.

Hugging Face's ``DINOv3ConvNextModel`` names the same tensors
``model.stages.<i>.downsample_layers.<k>.*``, ``model.stages.<i>.layers.<j>
.{depthwise_conv, layer_norm, pointwise_conv1, pointwise_conv2, gamma}`` and
``layer_norm.*``; :func:`convert_hf_convnext` renames them.
"""
import re
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from .reading import extract_state_dict, read_checkpoint
from .strict_check import check_state_dict

StateDict = Dict[str, Tensor]

# Meta's sizes (dinov3/models/convnext.py ``convnext_sizes``), by the
# stem's width and the depth of the third stage, for error messages.
_SIZE_NAMES = {
    (96, 9): 'tiny',
    (96, 27): 'small',
    (128, 27): 'base',
    (192, 27): 'large',
}
_HF_BLOCK = {
    'depthwise_conv': 'dwconv',
    'layer_norm': 'norm',
    'pointwise_conv1': 'pwconv1',
    'pointwise_conv2': 'pwconv2',
    'gamma': 'gamma',
}
_HF_STAGE = re.compile(r'^(?:model\.)?stages\.(\d+)\.(.*)$')


def is_hf_convnext_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether ``state_dict`` is a ``DINOv3ConvNextModel``'s (its stages hold
    their ``downsample_layers`` and ``layers``)."""
    return any(
        _HF_STAGE.match(k) and ('.downsample_layers.' in k or '.layers.' in k)
        for k in state_dict)


def convert_hf_convnext(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Hugging Face ``DINOv3ConvNextModel`` state_dict -> Meta's layout.

    Keys of no known part are kept as they are, so that a strict check
    reports them.
    """
    converted = {}
    for key, value in state_dict.items():
        match = _HF_STAGE.match(key)
        if key.startswith('layer_norm.'):
            key = 'norm.' + key[len('layer_norm.'):]
        elif match:
            stage, rest = match.groups()
            if rest.startswith('downsample_layers.'):
                key = f'downsample_layers.{stage}.' + rest[
                    len('downsample_layers.'):]
            elif rest.startswith('layers.'):
                _, block, name = rest.split('.', 2)
                part, _, tail = name.partition('.')
                part = _HF_BLOCK.get(part, part)
                key = f'stages.{stage}.{block}.{part}' + (f'.{tail}'
                                                          if tail else '')
        converted[key] = value
    return converted


def to_convnext_layout(state_dict: Mapping[str, Tensor],
                       source: str) -> StateDict:
    """Meta's or Hugging Face's ConvNeXt state_dict -> the keys of
    :class:`DinoV3ConvNeXt` (Meta's, without the ``norms.3`` copy).

    Raises:
        ValueError: if ``norms.3.*`` differs from ``norm.*`` (then the file
            is no ConvNeXt of Meta's and dropping it would hide that).
    """
    if is_hf_convnext_layout(state_dict):
        state_dict = convert_hf_convnext(state_dict)
    state_dict = dict(state_dict)
    for name in ('weight', 'bias'):
        copy = state_dict.pop(f'norms.3.{name}', None)
        final = state_dict.get(f'norm.{name}')
        if copy is not None and final is not None and not torch.equal(
                copy, final):
            raise ValueError(
                f'{source}: norms.3.{name} differs from norm.{name}; in '
                "Meta's ConvNeXt files both name the final norm")
    return state_dict


def describe_convnext(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The name of Meta's ConvNeXt size that ``state_dict`` looks like."""
    stem = state_dict.get('downsample_layers.0.0.weight')
    if stem is None:
        return None
    depth = len(
        {k.split('.')[2]
         for k in state_dict if k.startswith('stages.2.')})
    return _SIZE_NAMES.get((stem.shape[0], depth))


def load_convnext_state_dict(backbone: nn.Module, state_dict: Mapping,
                             source: str) -> None:
    """Load DINOv3 ConvNeXt weights (Meta's or Hugging Face's layout,
    possibly wrapped in a checkpoint dict) into ``backbone`` strictly.

    Raises:
        ValueError: on any missing, unexpected or mis-shaped key, naming
            ``source``, the configured arch and the size the file looks like.
    """
    state_dict = to_convnext_layout(
        extract_state_dict(state_dict, source), source)
    looks_like = describe_convnext(state_dict)
    hints = ([f'The weights look like ConvNeXt {looks_like!r}.']
             if looks_like else [])
    target = (f'{type(backbone).__name__}'
              f'(arch={getattr(backbone, "arch", "?")!r})')
    check_state_dict(backbone.state_dict(), state_dict, source, target, hints)
    with torch.no_grad():
        backbone.load_state_dict(state_dict)


def load_convnext_checkpoint(backbone: nn.Module, filename: str) -> None:
    """Load a DINOv3 ConvNeXt file (``.pth``, ``.safetensors``, path or URL)
    into ``backbone`` strictly; see :func:`load_convnext_state_dict`."""
    load_convnext_state_dict(backbone, read_checkpoint(filename), filename)
