from .arch_detection import describe_arch
from .backbone import load_backbone_checkpoint, load_backbone_state_dict
from .reading import extract_state_dict, read_checkpoint
from .safe_loading import install_safe_loading
from .segmentor import load_segmentor_checkpoint
from .strict_check import check_state_dict

__all__ = [
    'install_safe_loading', 'check_state_dict', 'describe_arch',
    'extract_state_dict', 'load_backbone_checkpoint',
    'load_backbone_state_dict', 'read_checkpoint', 'load_segmentor_checkpoint'
]
