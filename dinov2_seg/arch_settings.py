"""The DINOv2 architecture presets (Meta's released sizes).

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
