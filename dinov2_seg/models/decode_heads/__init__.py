from .bn_head import DinoBNHead
from .eomt_head import EoMTHead
from .mask2former_head import DinoMask2FormerHead

__all__ = ['DinoBNHead', 'DinoMask2FormerHead', 'EoMTHead']
