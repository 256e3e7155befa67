from .bn_head import BNHead
from .eomt_head import EoMTHead
from .mask2former_head import DinoMask2FormerHead

__all__ = ['BNHead', 'DinoMask2FormerHead', 'EoMTHead']
