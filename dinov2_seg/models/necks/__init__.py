from .feature_pyramid import DinoFeaturePyramid

__all__ = ['DinoFeaturePyramid']
