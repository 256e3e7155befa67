"""DINOv2 semantic segmentation on mmsegmentation 1.x.

Importing the package makes every checkpoint load with
``weights_only=True`` (mmengine's own checkpoints included), and nothing
more: light tools (``tools/download_checkpoints.py``)
run without mmcv. Importing ``dinov2_seg.models`` and
``dinov2_seg.datasets`` registers the modules and transforms in mmseg's
registries (configs do it through ``custom_imports``).
"""
from .checkpoints import install_safe_loading

__version__ = '0.1.0'

install_safe_loading()
