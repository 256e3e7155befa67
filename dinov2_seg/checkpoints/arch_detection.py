"""Naming the DINOv2 or DINOv3 preset a backbone state_dict looks like, for
error messages about files of another size."""
import re
from typing import Mapping, Optional

from torch import Tensor

from dinov2_seg.arch_settings import ARCH_SETTINGS, DINOV3_ARCH_SETTINGS

_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.')


def _depth(state_dict: Mapping[str, Tensor]) -> int:
    blocks = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state_dict) if m}
    return max(blocks) + 1 if blocks else 0


def describe_arch(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """Name the preset a state_dict in Meta's layout looks like (e.g.
    ``vitb14_reg4``, ``vits16plus``), or list its settings when none fits;
    None when it is not a DINOv2 / DINOv3 backbone at all."""
    if 'cls_token' not in state_dict:
        return None
    if 'storage_tokens' in state_dict or 'rope_embed.periods' in state_dict:
        return describe_dinov3_arch(state_dict)
    registers = state_dict.get('register_tokens')
    found = dict(
        embed_dim=state_dict['cls_token'].shape[-1],
        depth=_depth(state_dict),
        num_register_tokens=0 if registers is None else registers.shape[1])
    for name, settings in ARCH_SETTINGS.items():
        if all(settings[k] == v for k, v in found.items()):
            return name
    return ', '.join(f'{k}={v}' for k, v in found.items())


def _dinov3_hidden(settings: Mapping) -> int:
    """The FFN's hidden width an arch gives (the rows of fc1 / w1)."""
    hidden = int(settings['embed_dim'] * settings['ffn_ratio'])
    if settings['ffn'] == 'mlp':
        return hidden
    hidden = int(hidden * 2 / 3)
    return hidden + (-hidden % settings['swiglu_align'])


def _dinov3_found(state_dict: Mapping[str, Tensor]) -> dict:
    swiglu = 'blocks.0.mlp.w1.weight' in state_dict
    ffn_in = state_dict.get(
        'blocks.0.mlp.w1.weight' if swiglu else 'blocks.0.mlp.fc1.weight')
    storage = state_dict.get('storage_tokens')
    found = dict(
        embed_dim=state_dict['cls_token'].shape[-1],
        depth=_depth(state_dict),
        ffn='swiglu' if swiglu else 'mlp',
        ffn_hidden=None if ffn_in is None else ffn_in.shape[0],
        qkv_bias='blocks.0.attn.qkv.bias' in state_dict,
        num_storage_tokens=0 if storage is None else storage.shape[1],
        local_cls_norm='local_cls_norm.weight' in state_dict,
        untie_cls_norm='cls_norm.weight' in state_dict)
    # No head count: nothing in a file shows it but the RoPE periods, which
    # the conversion of timm's and transformers' layouts fills in from the
    # model's own settings.
    return found


def _dinov3_expected(settings: Mapping) -> dict:
    return dict(
        embed_dim=settings['embed_dim'],
        depth=settings['depth'],
        ffn=settings['ffn'],
        ffn_hidden=_dinov3_hidden(settings),
        qkv_bias=settings['qkv_bias'],
        num_storage_tokens=settings['num_storage_tokens'],
        local_cls_norm=settings['local_cls_norm'],
        untie_cls_norm=settings['untie_cls_norm'])


def describe_dinov3_arch(state_dict: Mapping[str, Tensor]) -> str:
    """Name the DINOv3 preset a state_dict in Meta's layout looks like
    (``vits16`` and ``vits16plus`` differ only in their FFN), or say which
    settings differ from the closest preset and which keys show it."""
    found = _dinov3_found(state_dict)
    differences = {}
    for name, settings in DINOV3_ARCH_SETTINGS.items():
        expected = _dinov3_expected(settings)
        differences[name] = [k for k, v in found.items() if expected[k] != v]
        if not differences[name]:
            return name
    closest = min(differences, key=lambda n: len(differences[n]))
    expected = _dinov3_expected(DINOV3_ARCH_SETTINGS[closest])
    keys = dict(
        embed_dim='cls_token',
        depth='blocks.<i>.*',
        ffn='blocks.0.mlp.w1/fc1',
        ffn_hidden='blocks.0.mlp.w1/fc1.weight',
        qkv_bias='blocks.0.attn.qkv.bias',
        num_storage_tokens='storage_tokens',
        local_cls_norm='local_cls_norm.*',
        untie_cls_norm='cls_norm.*')
    details = '; '.join(f'{k}={found[k]} (from {keys[k]}), {closest} has '
                        f'{expected[k]}' for k in differences[closest])
    return f'no DINOv3 preset; closest {closest!r}: {details}'
