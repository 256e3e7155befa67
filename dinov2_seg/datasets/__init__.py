from .layout import check_dataset_paths
from .synthetic import (SHAPES_CLASSES, SHAPES_PALETTE,
                        generate_shapes_dataset, render_sample)
from .transforms import LoadAnnotations

__all__ = [
    'LoadAnnotations', 'SHAPES_CLASSES', 'SHAPES_PALETTE',
    'check_dataset_paths', 'generate_shapes_dataset', 'render_sample'
]
