from .dinov2 import ARCH_SETTINGS, DinoVisionTransformer
from .vit_adapter import ViTAdapter

__all__ = ['ARCH_SETTINGS', 'DinoVisionTransformer', 'ViTAdapter']
