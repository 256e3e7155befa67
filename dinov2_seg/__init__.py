"""DINOv2 semantic segmentation on mmsegmentation 1.x.

Importing the package lets torch>=2.6 load the checkpoints that mmengine
writes, and nothing more: light tools (``tools/download_checkpoints.py``)
run without mmcv. Importing ``dinov2_seg.models`` and
``dinov2_seg.datasets`` registers the modules and transforms in mmseg's
registries (configs do it through ``custom_imports``).
"""
from .checkpoints import allow_mmengine_checkpoints

__version__ = '0.1.0'

allow_mmengine_checkpoints()
