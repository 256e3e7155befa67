"""Strict loading of DINOv2 backbone files.

The released ``dinov2_<arch>_pretrain.pth`` files are plain state_dicts whose
keys are exactly the backbone's parameter names, so they need no renaming;
timm and Hugging Face files are converted to that layout first (foreign.py).
What this module adds is checking: every tensor must be used, none missing,
and a file of another size is an error naming both shapes.
"""
import re
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from .foreign import to_official_layout

_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')


def extract_state_dict(checkpoint: Mapping, source: str) -> Dict[str, Tensor]:
    """Return the backbone tensors of a loaded checkpoint.

    Accepts a plain state_dict (Meta's backbone files), a dict wrapping one
    under ``state_dict`` or ``model``, and a whole segmentor checkpoint, whose
    ``backbone.`` entries are taken (likewise ``module.`` and ``dinov2.``).
    """
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not state_dict:
        raise ValueError(
            f'{source} holds no tensors; expected a DINOv2 '
            'backbone state_dict such as dinov2_vits14_pretrain.pth')
    # A whole segmentor, a DDP-wrapped model or a transformers model with a
    # task head: keep the backbone's part.
    for prefix in ('module.', 'backbone.', 'dinov2.'):
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {
                k[len(prefix):]: v
                for k, v in state_dict.items() if k.startswith(prefix)
            }
    return state_dict


def describe_arch(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Name the preset a state_dict looks like (e.g. ``vitb14_reg4``)."""
    # Imported here: the backbone module imports this one to load weights.
    from dinov2_seg.models.backbones.dinov2 import ARCH_SETTINGS
    if 'cls_token' not in state_dict:
        return None
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state_dict) if m}
    registers = state_dict.get('register_tokens')
    found = dict(
        embed_dim=state_dict['cls_token'].shape[-1],
        depth=max(blocks) + 1 if blocks else 0,
        num_register_tokens=0 if registers is None else registers.shape[1])
    for name, settings in ARCH_SETTINGS.items():
        if all(settings[k] == v for k, v in found.items()):
            return name
    return ', '.join(f'{k}={v}' for k, v in found.items())


def check_state_dict(expected: Mapping[str, Tensor],
                     state_dict: Mapping[str, Tensor],
                     source: str,
                     target: str,
                     hints: Sequence[str] = ()) -> None:
    """Raise a ValueError listing every missing, unexpected or mis-shaped key
    between ``state_dict`` (read from ``source``) and the ``expected``
    tensors of ``target``; ``hints`` are added to the message."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f'  {k}: file has {tuple(state_dict[k].shape)}, '
        f'{target} expects {tuple(v.shape)}' for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'Checkpoint {source} does not fit {target}.', *hints]
    if mismatched:
        lines += ['Shape mismatches:'] + mismatched[:10]
        if len(mismatched) > 10:
            lines.append(f'  ... and {len(mismatched) - 10} more')
    for title, keys in (('Missing keys', missing), ('Unexpected keys',
                                                    unexpected)):
        if keys:
            shown = ', '.join(keys[:10])
            more = f' ... and {len(keys) - 10} more' if len(keys) > 10 else ''
            lines.append(f'{title} ({len(keys)}): {shown}{more}')
    raise ValueError('\n'.join(lines))


def read_checkpoint(filename: str) -> Mapping:
    """Read a ``.safetensors`` file (as the Hugging Face Hub serves them) or
    anything mmengine's CheckpointLoader reads (paths, URLs)."""
    if filename.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(f'{filename}: reading .safetensors files needs '
                              '`pip install safetensors`') from error
        return load_file(filename)
    return CheckpointLoader.load_checkpoint(filename, map_location='cpu')


def load_backbone_checkpoint(
        backbone: nn.Module,
        filename: str,
        keep: Optional[Callable[[str], bool]] = None) -> None:
    """Load a DINOv2 backbone file (path or URL; Meta's, timm's or Hugging
    Face's layout) into ``backbone`` strictly.

    ``keep`` selects the keys that take part, on both sides (e.g. only the
    ViT of a ViT-Adapter, which has no use for the file's final norm).

    Raises:
        ValueError: if any key is missing, unexpected or of another shape; the
            message names the file, the configured arch and both shapes.
    """
    state_dict = to_official_layout(
        extract_state_dict(read_checkpoint(filename), filename))
    target = (f'{type(backbone).__name__}'
              f'(arch={getattr(backbone, "arch", "?")!r})')
    looks_like = describe_arch(state_dict)
    hints = [f'The file looks like arch {looks_like!r}.'] if looks_like else []
    expected = backbone.state_dict()
    if keep is not None:
        expected = {k: v for k, v in expected.items() if keep(k)}
        state_dict = {k: v for k, v in state_dict.items() if keep(k)}
    check_state_dict(expected, state_dict, filename, target, hints)
    with torch.no_grad():
        backbone.load_state_dict(state_dict, strict=keep is None)
