from .layout import check_dataset_paths
from .synthetic import (SHAPES_CLASSES, SHAPES_PALETTE,
                        generate_shapes_dataset, render_sample)

__all__ = [
    'SHAPES_CLASSES', 'SHAPES_PALETTE', 'check_dataset_paths',
    'generate_shapes_dataset', 'render_sample'
]
