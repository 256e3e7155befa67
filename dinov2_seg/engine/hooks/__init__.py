from .checkpoint_hook import DinoCheckpointHook
from .frozen_backbone_checkpoint_hook import FrozenBackboneCheckpointHook
from .mask_annealing_hook import EoMTMaskAnnealingHook
from .progress_bar_hook import DinoProgressBarHook

__all__ = [
    'DinoCheckpointHook', 'DinoProgressBarHook', 'EoMTMaskAnnealingHook',
    'FrozenBackboneCheckpointHook'
]
