from .dinov2 import ARCH_SETTINGS, DinoVisionTransformer, DinoViTBase
from .vit_adapter import DinoViTAdapter

__all__ = [
    'ARCH_SETTINGS', 'DinoViTBase', 'DinoVisionTransformer', 'DinoViTAdapter'
]
