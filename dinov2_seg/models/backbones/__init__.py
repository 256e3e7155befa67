from .dinov2 import ARCH_SETTINGS, DinoVisionTransformer, DinoViTBase
from .dinov3 import DINOV3_ARCH_SETTINGS, DinoV3VisionTransformer
from .dinov3_adapter import DinoV3Adapter
from .dinov3_convnext import DinoV3ConvNeXt  # noqa: F401  (registers it)
from .vit_adapter import DinoViTAdapter

__all__ = [
    'ARCH_SETTINGS', 'DINOV3_ARCH_SETTINGS', 'DinoViTBase',
    'DinoVisionTransformer', 'DinoV3VisionTransformer', 'DinoViTAdapter',
    'DinoV3Adapter'
]
