"""Label maps made visible: palette colours, an overlay on the image with
class names, a palette PNG, and the largest classes in words."""
from typing import List, Sequence

import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer
from PIL import Image


def render_segmentation(labels: np.ndarray,
                        palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Colour a label map with a dataset palette: (H, W, 3) RGB uint8."""
    return np.asarray(palette, dtype=np.uint8)[labels]


def overlay_segmentation(image: np.ndarray,
                         labels: np.ndarray,
                         dataset_meta: dict,
                         opacity: float = 0.5) -> np.ndarray:
    """Blend the coloured labels over a BGR image, with class names, using
    mmseg's visualizer: (H, W, 3) RGB uint8."""
    name = 'dinov2_seg_inference'
    # Settings only at creation: mmengine warns when a later get_instance
    # passes them again.
    visualizer = (
        SegLocalVisualizer.get_instance(name)
        if SegLocalVisualizer.check_instance_created(name) else
        SegLocalVisualizer.get_instance(name, alpha=opacity))
    visualizer.set_dataset_meta(dataset_meta['classes'],
                                dataset_meta['palette'])
    sample = SegDataSample(
        pred_sem_seg=PixelData(data=torch.from_numpy(labels)[None]))
    visualizer.alpha = opacity
    visualizer.add_datasample(
        'inference', image[..., ::-1].copy(), sample, draw_gt=False)
    return visualizer.get_image()


def save_label_png(labels: np.ndarray, palette: list, path: str) -> None:
    """An 8-bit palette PNG: pixel values are class indices, shown in the
    dataset's colours."""
    image = Image.fromarray(labels.astype(np.uint8), mode='P')
    image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    image.save(path)


def largest_classes(labels: np.ndarray,
                    classes: Sequence[str],
                    top: int = 5) -> List[str]:
    """The largest classes of a label map as 'name share%' strings."""
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    order = np.argsort(counts)[::-1]
    return [
        f'{classes[i]} {100 * counts[i] / labels.size:.1f}%'
        for i in order[:top] if counts[i]
    ]
