from .atomic_file_backend import AtomicLocalBackend
from .console import (ConsoleFilter, QuietConsoleRunner, hide_library_noise,
                      runner_for_console)
from .dinov3_schedule import DinoV3WarmupCosineLR  # noqa: F401
from .hooks import (DinoCheckpointHook, DinoProgressBarHook,
                    EoMTMaskAnnealingHook, FrozenBackboneCheckpointHook)
from .layer_decay import DinoLayerDecayOptimWrapperConstructor
from .sharded import DinoFullyShardedDataParallel
from .two_stage_warmup import TwoStageWarmupPolyLR

__all__ = [
    'AtomicLocalBackend', 'ConsoleFilter', 'DinoCheckpointHook',
    'DinoLayerDecayOptimWrapperConstructor', 'DinoFullyShardedDataParallel',
    'DinoProgressBarHook', 'EoMTMaskAnnealingHook',
    'FrozenBackboneCheckpointHook', 'QuietConsoleRunner',
    'TwoStageWarmupPolyLR', 'hide_library_noise', 'runner_for_console'
]
