from .dinov2 import ARCH_SETTINGS, DinoVisionTransformer, DinoViTBase
from .dinov3_convnext import DinoV3ConvNeXt  # noqa: F401  (registers it)
from .vit_adapter import DinoViTAdapter

__all__ = [
    'ARCH_SETTINGS', 'DinoViTBase', 'DinoVisionTransformer', 'DinoViTAdapter'
]
