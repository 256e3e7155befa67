"""DINOv2 semantic segmentation on mmsegmentation 1.x.

Importing the package registers its modules in mmseg's registries (configs
do it through ``custom_imports``) and lets torch>=2.6 load the checkpoints
that mmengine writes.
"""
from . import engine, evaluation, models  # noqa: F401
from .checkpoints import allow_mmengine_checkpoints

__version__ = '0.1.0'

allow_mmengine_checkpoints()
