"""mmcv's multi-scale deformable attention, always in float32, and on a
GPU without mmcv's compiled CUDA kernel through mmcv's PyTorch version.

Two users share it: the ViT-Adapter (``DeformableAttention``) and mmdet's
Mask2Former pixel decoder, which builds mmcv's
``MultiScaleDeformableAttention`` itself. mmcv's ``forward`` picks its
kernel from two names of its module
(``MultiScaleDeformableAttnFunction`` for CUDA tensors,
``multi_scale_deformable_attn_pytorch`` otherwise), so replacing those two
names is the one place that reaches both without copying the forward:

- under autocast the sampled values arrive in bfloat16 or float16, which
  mmcv's CUDA kernel does not take (mmcv issue 2878); the sampling runs
  with autocast off on float32 inputs (the projections around it keep
  autocast);
- pip's torch wheels bring no ``nvcc``, so ``tools/setup_env.sh`` may build
  mmcv without CUDA ops; CUDA tensors then go to the PyTorch version, with
  one warning naming the cost, instead of failing.
"""
import warnings
from typing import Tuple

import torch
from mmcv.ops import get_compiling_cuda_version
from mmcv.ops import multi_scale_deform_attn as mmcv_msda
from torch import Tensor

# mmcv's own implementations, called by the replacements below.
MMCV_CUDA_FUNCTION = mmcv_msda.MultiScaleDeformableAttnFunction
pytorch_kernel = mmcv_msda.multi_scale_deformable_attn_pytorch

FALLBACK_WARNING = (
    "mmcv was built without its CUDA ops: multi-scale deformable attention "
    "(ViT-Adapter, Mask2Former's pixel decoder) runs mmcv's PyTorch version "
    "on the GPU, several times slower and with more memory; rebuild mmcv "
    "with nvcc present for the compiled kernel (README: GPU set-up)")


def cuda_kernel_compiled() -> bool:
    """Whether this mmcv build has CUDA ops (built with nvcc)."""
    return get_compiling_cuda_version() != 'not available'


def _float32(*tensors: Tensor) -> Tuple[Tensor, ...]:
    return tuple(tensor.float() for tensor in tensors)


def float32_pytorch_kernel(value: Tensor, spatial_shapes: Tensor,
                           sampling_locations: Tensor,
                           attention_weights: Tensor) -> Tensor:
    """mmcv's PyTorch deformable attention on float32 inputs, autocast
    off."""
    with torch.autocast(value.device.type, enabled=False):
        value, sampling_locations, attention_weights = _float32(
            value, sampling_locations, attention_weights)
        return pytorch_kernel(value, spatial_shapes, sampling_locations,
                              attention_weights)


class Float32DeformableAttnFunction:
    """Stands in for mmcv's autograd function on CUDA tensors: float32
    inputs with autocast off, and the PyTorch version where the compiled
    kernel is missing."""

    @staticmethod
    def apply(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
              sampling_locations: Tensor, attention_weights: Tensor,
              im2col_step: int) -> Tensor:
        if not cuda_kernel_compiled():
            warnings.warn(FALLBACK_WARNING)
            return float32_pytorch_kernel(value, spatial_shapes,
                                          sampling_locations,
                                          attention_weights)
        with torch.autocast(value.device.type, enabled=False):
            value, sampling_locations, attention_weights = _float32(
                value, sampling_locations, attention_weights)
            return MMCV_CUDA_FUNCTION.apply(value, spatial_shapes,
                                            level_start_index,
                                            sampling_locations,
                                            attention_weights, im2col_step)


mmcv_msda.MultiScaleDeformableAttnFunction = Float32DeformableAttnFunction
mmcv_msda.multi_scale_deformable_attn_pytorch = float32_pytorch_kernel
