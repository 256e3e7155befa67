"""The Python API, as mmseg's ``mmseg.apis``: build a segmentor from a
config and checkpoint files, segment images, colour the labels."""
from .inference import inference_segmentor, init_segmentor, render_segmentation

__all__ = ['inference_segmentor', 'init_segmentor', 'render_segmentation']
