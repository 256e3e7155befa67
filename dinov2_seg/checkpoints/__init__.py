from .official import (check_state_dict, describe_arch, extract_state_dict,
                       load_backbone_checkpoint)
from .safe_globals import allow_mmengine_checkpoints
from .segmentor import load_segmentor_checkpoint

__all__ = [
    'allow_mmengine_checkpoints', 'check_state_dict', 'describe_arch',
    'extract_state_dict', 'load_backbone_checkpoint',
    'load_segmentor_checkpoint'
]
