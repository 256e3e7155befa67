from .arch_detection import describe_arch
from .backbone import load_backbone_checkpoint
from .reading import extract_state_dict, read_checkpoint
from .safe_globals import allow_mmengine_checkpoints
from .segmentor import load_segmentor_checkpoint
from .strict_check import check_state_dict

__all__ = [
    'allow_mmengine_checkpoints', 'check_state_dict', 'describe_arch',
    'extract_state_dict', 'load_backbone_checkpoint', 'read_checkpoint',
    'load_segmentor_checkpoint'
]
