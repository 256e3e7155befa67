"""The DINOv2 and DINOv3 architecture presets (Meta's released sizes).

A module of plain data that imports nothing of the project, so that the
backbones and the checkpoint tools (which name the preset a file looks like)
can both use it without importing each other.
"""
from typing import Dict, Union

_SIZES = {
    'vits14': dict(embed_dim=384, depth=12, num_heads=6, ffn='mlp'),
    'vitb14': dict(embed_dim=768, depth=12, num_heads=12, ffn='mlp'),
    'vitl14': dict(embed_dim=1024, depth=24, num_heads=16, ffn='mlp'),
    'vitg14': dict(embed_dim=1536, depth=40, num_heads=24, ffn='swiglu'),
}
# The register models were trained with a different positional-embedding
# resize (plain output size, antialiased) than the original ones (a +0.1
# scale-factor offset kept for backward compatibility); features only match
# the released weights if each family keeps its own.
_ORIGINAL = dict(
    num_register_tokens=0, interpolate_offset=0.1, interpolate_antialias=False)
_REGISTERS = dict(
    num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)

ARCH_SETTINGS: Dict[str, dict] = {
    **{
        name: dict(size, **_ORIGINAL)
        for name, size in _SIZES.items()
    },
    **{
        f'{name}_reg4': dict(size, **_REGISTERS)
        for name, size in _SIZES.items()
    },
}


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Return the full settings of a preset name or a custom arch dict.

    Raises:
        KeyError: for an unknown preset name or a dict lacking settings.
    """
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise KeyError(f'Unknown DINOv2 arch {arch!r}; expected one of '
                           f'{sorted(ARCH_SETTINGS)} or a dict of settings')
        return dict(ARCH_SETTINGS[arch])
    missing = set(ARCH_SETTINGS['vits14']) - set(arch)
    if missing:
        raise KeyError(f'DINOv2 arch dict lacks {sorted(missing)}; '
                       f'start from e.g. ARCH_SETTINGS["vits14"]')
    return dict(arch)


# DINOv3 ViTs as Meta's ``dinov3/hub/backbones.py`` builds them. Common to
# all: patch 16, 4 storage tokens, RoPE base 100, LayerScale, LayerNorm eps
# 1e-5, a masked key bias. ``ffn_ratio`` is Meta's (the SwiGLU hidden width
# is 2/3 of ``dim * ffn_ratio`` rounded up to ``swiglu_align``);
# ``local_cls_norm``: the file holds a norm used only for the local crops of
# pretraining (kept so that it loads strictly, never applied);
# ``untie_cls_norm``: the class and storage tokens get their own final norm
# (``cls_norm``; no released file has one).
_V3_COMMON = dict(
    ffn='mlp',
    ffn_ratio=4.0,
    swiglu_align=8,
    qkv_bias=True,
    num_storage_tokens=4,
    rope_base=100.0,
    local_cls_norm=False,
    untie_cls_norm=False)
DINOV3_ARCH_SETTINGS: Dict[str, dict] = {
    'vits16':
    dict(_V3_COMMON, embed_dim=384, depth=12, num_heads=6),
    'vits16plus':
    dict(
        _V3_COMMON,
        embed_dim=384,
        depth=12,
        num_heads=6,
        ffn='swiglu',
        ffn_ratio=6.0),
    'vitb16':
    dict(_V3_COMMON, embed_dim=768, depth=12, num_heads=12),
    'vitl16':
    dict(_V3_COMMON, embed_dim=1024, depth=24, num_heads=16),
    # Meta's dinov3_vitl16 with weights=SAT493M: the satellite file has the
    # local-crop class norm, the web (LVD1689M) one has not.
    'vitl16_sat493m':
    dict(
        _V3_COMMON,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        local_cls_norm=True),
    'vitl16plus':
    dict(
        _V3_COMMON,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        ffn='swiglu',
        ffn_ratio=6.0),
    'vith16plus':
    dict(
        _V3_COMMON,
        embed_dim=1280,
        depth=32,
        num_heads=20,
        ffn='swiglu',
        ffn_ratio=6.0),
    'vit7b16':
    dict(
        _V3_COMMON,
        embed_dim=4096,
        depth=40,
        num_heads=32,
        ffn='swiglu',
        ffn_ratio=3.0,
        swiglu_align=64,
        qkv_bias=False,
        local_cls_norm=True),
}


def resolve_dinov3_arch(arch: Union[str, dict]) -> dict:
    """Return the full settings of a DINOv3 preset name or custom dict
    (a dict may leave out what all the hub archs share: its missing keys
    take the values of ``vits16``).

    Raises:
        KeyError: for an unknown preset name or a dict without
            ``embed_dim``, ``depth`` and ``num_heads``.
    """
    if isinstance(arch, str):
        if arch not in DINOV3_ARCH_SETTINGS:
            raise KeyError(
                f'Unknown DINOv3 arch {arch!r}; expected one of '
                f'{sorted(DINOV3_ARCH_SETTINGS)} or a dict of settings')
        return dict(DINOV3_ARCH_SETTINGS[arch])
    missing = {'embed_dim', 'depth', 'num_heads'} - set(arch)
    if missing:
        raise KeyError(f'DINOv3 arch dict lacks {sorted(missing)}; '
                       'start from e.g. DINOV3_ARCH_SETTINGS["vits16"]')
    unknown = set(arch) - set(DINOV3_ARCH_SETTINGS['vits16'])
    if unknown:
        raise KeyError(f'DINOv3 arch dict has unknown keys {sorted(unknown)}')
    return dict(_V3_COMMON, **arch)
