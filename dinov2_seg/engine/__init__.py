from .console import (ConsoleFilter, QuietConsoleRunner, hide_library_noise,
                      runner_for_console)
from .hooks import EoMTMaskAnnealingHook, ProgressBarHook
from .layer_decay import LayerDecayOptimWrapperConstructor
from .two_stage_warmup import TwoStageWarmupPolyLR

__all__ = [
    'ConsoleFilter', 'EoMTMaskAnnealingHook',
    'LayerDecayOptimWrapperConstructor', 'ProgressBarHook',
    'QuietConsoleRunner', 'TwoStageWarmupPolyLR', 'hide_library_noise',
    'runner_for_console'
]
