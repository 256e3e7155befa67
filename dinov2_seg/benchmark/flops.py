"""Model FLOPs of a DINOv2 or DINOv3 ViT backbone and the dense bf16 peak
of known GPUs, for the achieved TFLOP/s and model-FLOPs utilisation of ``--mode
backbone``."""
from typing import Optional

import torch
from torch import nn

# Dense (no sparsity) bfloat16 tensor-core peaks from NVIDIA's data sheets,
# for the model-FLOPs utilisation of --mode backbone.
DENSE_BF16_PEAK_TFLOPS = {'H100': 989.4, 'H200': 989.4, 'A100': 312.0}


def backbone_flops(backbone: nn.Module, height: int,
                   width: int) -> Optional[float]:
    """Model FLOPs of one image through a DINOv2 or DINOv3 ViT: 2 per
    multiply-add of the patch embedding and every linear layer of the
    blocks, plus the attention products (QK^T and attention x V). None for
    a backbone without ViT blocks (the DINOv3 ConvNeXt): not counted."""
    if not hasattr(backbone, 'blocks') or not hasattr(backbone, 'patch_embed'):
        return None
    patch = backbone.patch_size
    if hasattr(backbone, 'num_storage_tokens'):
        # DINOv3: the patch convolution drops the remainder.
        grid = (height // patch) * (width // patch)
        prefix = backbone.num_storage_tokens
    else:
        grid = -(-height // patch) * -(-width // patch)  # center-padded
        prefix = backbone.num_register_tokens
    tokens = 1 + prefix + grid
    linear = sum(m.weight.numel() for m in backbone.blocks.modules()
                 if isinstance(m, nn.Linear))
    attention = 2 * 2 * tokens * tokens * backbone.embed_dim * len(
        backbone.blocks)
    embed = backbone.patch_embed.proj.weight.numel() * grid
    return 2.0 * (linear * tokens + embed) + attention


def gpu_peak_tflops(device: str) -> Optional[float]:
    if not device.startswith('cuda'):
        return None
    name = torch.cuda.get_device_name()
    for model, peak in DENSE_BF16_PEAK_TFLOPS.items():
        if model in name:
            return peak
    return None
