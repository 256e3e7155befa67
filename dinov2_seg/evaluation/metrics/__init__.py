from .confusion_iou_metric import ConfusionIoUMetric

__all__ = ['ConfusionIoUMetric']
