from .dinov2 import ARCH_SETTINGS, DinoVisionTransformer

__all__ = ['ARCH_SETTINGS', 'DinoVisionTransformer']
