from .eomt_color_jitter import EoMTColorJitter
from .layout import check_dataset_paths
from .synthetic import (SHAPES_CLASSES, SHAPES_PALETTE,
                        generate_shapes_dataset, render_sample)
from .transforms import DinoLoadAnnotations

__all__ = [
    'DinoLoadAnnotations', 'EoMTColorJitter', 'SHAPES_CLASSES',
    'SHAPES_PALETTE', 'check_dataset_paths', 'generate_shapes_dataset',
    'render_sample'
]
