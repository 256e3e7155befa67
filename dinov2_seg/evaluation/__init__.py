from .metrics import ConfusionIoUMetric

__all__ = ['ConfusionIoUMetric']
