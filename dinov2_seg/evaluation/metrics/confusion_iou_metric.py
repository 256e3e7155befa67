"""mmseg's IoUMetric that also keeps the confusion matrix, and draws it."""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from torch import Tensor


@METRICS.register_module()
class ConfusionIoUMetric(IoUMetric):
    """:class:`mmseg.evaluation.IoUMetric` (same numbers, same table) that
    also sums the confusion matrix of the whole evaluation (rows: ground
    truth, columns: prediction, pixel counts; ignored pixels left out) and,
    with ``plot_dir``, writes the per-class IoU, confusion-matrix and class
    distribution charts there (see
    :func:`dinov2_seg.visualization.write_evaluation_plots`).

    Args:
        plot_dir (str, optional): Where the charts go.
        **kwargs: :class:`IoUMetric`'s arguments.

    Attributes:
        confusion_matrix (np.ndarray): (C, C) int64 counts of the last
            evaluation (on the main process).
    """

    def __init__(self, plot_dir: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.plot_dir = plot_dir
        self.confusion_matrix: Optional[np.ndarray] = None

    @staticmethod
    def intersect_and_union(pred_label: Tensor, label: Tensor,
                            num_classes: int, ignore_index: int) -> tuple:
        """IoUMetric's four areas plus this image's confusion counts as
        (flat index ``gt * C + pred``, count) pairs: the non-zero entries
        only, so that gathering them across processes stays small."""
        areas = IoUMetric.intersect_and_union(pred_label, label, num_classes,
                                              ignore_index)
        # Labels outside 0..C-1 (other than ignore_index) are left out, as
        # IoUMetric's histograms leave them out.
        valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
        flat = label[valid].long() * num_classes + pred_label[valid].long()
        counts = torch.bincount(flat.cpu(), minlength=num_classes**2)
        index = torch.nonzero(counts).squeeze(1)
        return (*areas, (index, counts[index]))

    @staticmethod
    def sum_confusion(entries: Sequence[Tuple[Tensor, Tensor]],
                      num_classes: int) -> np.ndarray:
        flat = np.zeros(num_classes**2, dtype=np.int64)
        for index, counts in entries:
            np.add.at(flat, index.numpy(), counts.numpy())
        return flat.reshape(num_classes, num_classes)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if self.format_only:
            return super().compute_metrics(results)
        classes = self.dataset_meta['classes']
        self.confusion_matrix = self.sum_confusion([r[4] for r in results],
                                                   len(classes))
        metrics = super().compute_metrics([r[:4] for r in results])
        if self.plot_dir:
            # matplotlib is imported only when plots are asked for.
            from dinov2_seg.visualization import write_evaluation_plots
            paths = write_evaluation_plots(self.confusion_matrix, classes,
                                           self.plot_dir)
            names = ', '.join(osp.basename(p) for p in paths.values())
            print_log(f'Plots in {self.plot_dir}: {names}', logger='current')
        return metrics
