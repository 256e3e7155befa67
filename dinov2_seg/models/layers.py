"""Small building blocks shared by the models."""
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, at every pixel
    (ConvNeXt's and EoMT's ``LayerNorm2d``; parameters ``weight`` and
    ``bias`` of shape (C,), as in their checkpoints).

    Args:
        num_channels: C, the channels normalised.
        eps: Added to the variance, 1e-6 as in ConvNeXt and EoMT.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)
