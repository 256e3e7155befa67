"""Linear heads trained with Meta's DINOv3 segmentation code
(``dinov3/eval/segmentation/train.py``).

Its ``model_final.pth`` is ``{'model': ..., 'optimizer': ...}``, where
``model`` holds the head only: the entries of the trained ``FeatureDecoder``
whose names contain ``segmentation_model.1`` (its ``segmentation_model`` is
``[backbone, head]``). The head is ``LinearHead``:
``segmentation_model.1.batchnorm_layer.{weight, bias, running_mean,
running_var, num_batches_tracked}`` (a SyncBatchNorm) and
``segmentation_model.1.conv.{weight, bias}`` (the 1x1 classifier), the
same tensors as :class:`DinoBNHead`'s ``bn`` and ``conv_seg``. A file that
also kept the backbone (``segmentation_model.0.feature_model.*``, Meta's
backbone names) has it mapped to ``backbone.*``.
"""
from typing import Dict, Mapping

from torch import Tensor

StateDict = Dict[str, Tensor]

_PREFIX = 'segmentation_model.'
_RENAMES = {
    'segmentation_model.1.batchnorm_layer.': 'decode_head.bn.',
    'segmentation_model.1.conv.': 'decode_head.conv_seg.',
    'segmentation_model.0.feature_model.': 'backbone.',
}


def is_dinov3_head_checkpoint(checkpoint: Mapping) -> bool:
    """Whether a loaded file is a checkpoint of Meta's DINOv3 segmentation
    training (its tensors under ``model``, named ``segmentation_model.*``)."""
    model = checkpoint.get('model')
    return isinstance(model, Mapping) and bool(model) and all(
        isinstance(k, str) and k.startswith(_PREFIX) for k in model)


def convert_dinov3_head(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Meta's DINOv3 ``FeatureDecoder`` names -> the segmentor's.

    Keys of no known part are kept as they are, so that the strict check
    names them (e.g. a Mask2Former decoder's, or ``LinearHead`` built with
    ``use_batchnorm=False``, whose missing norm it reports).
    """
    converted = {}
    for key, value in state_dict.items():
        for old, new in _RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        converted[key] = value
    return converted
