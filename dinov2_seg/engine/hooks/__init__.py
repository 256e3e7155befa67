from .mask_annealing_hook import EoMTMaskAnnealingHook
from .progress_bar_hook import ProgressBarHook

__all__ = ['EoMTMaskAnnealingHook', 'ProgressBarHook']
