"""EoMT's colour jitter (``Transforms.color_jitter`` of tue-mps/eomt).

mmseg's ``PhotoMetricDistortion`` is not the same augmentation: its
brightness is additive (+-32 grey levels; EoMT multiplies by a factor in
[1 - 32/255, 1 + 32/255]) and its hue delta is in OpenCV's half-degree
units (18 is +-36 degrees; EoMT shifts by +-18 degrees, 0.05 of the
circle), with other probabilities and another order. This transform applies
EoMT's draws with torchvision's ``ColorJitter`` semantics on uint8 images,
which EoMT's torchvision pipeline has:

- brightness (p 0.5): ``x * f``, f ~ U(1 - b/255, 1 + b/255);
- then, in a random order (p 0.5 each way), contrast and the pair
  (saturation, hue):
  contrast (p 0.5): blend with the mean of the image's grey version,
  f ~ U(1 - c, 1 + c); saturation (p 0.5): blend with the grey version,
  f ~ U(1 - s, 1 + s); hue (p 0.5): rotate the HSV hue by h ~ U(-d, d)
  degrees (a fraction d / 360 of the circle);
- the image is rounded down to uint8 after each step and clipped to
  [0, 255], the grey version is ``0.2989 R + 0.587 G + 0.114 B``, rounded
  down.

The draws come from NumPy's global generator, as mmseg's transforms (which
mmengine seeds per dataloader worker), not Torch's.

EoMT jitters the whole image before its flip, scale jitter and crop; the
contrast mean depends on what the image holds, so the EoMT configs put
this transform first, after loading.
"""
from typing import List, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from torch import Tensor

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)
JitterStep = Tuple[str, float]


@TRANSFORMS.register_module()
class EoMTColorJitter(BaseTransform):
    """EoMT's colour jitter on ``results['img']`` (BGR uint8, H x W x 3).

    Args:
        brightness_delta (float): Brightness factor range ``1 +- delta /
            255`` (EoMT's ``max_brightness_delta``, 32).
        contrast (float): Contrast factor range ``1 +- contrast`` (0.5).
        saturation (float): Saturation factor range ``1 +- saturation``
            (0.5).
        hue_delta (float): Hue shift range in degrees, ``+- hue_delta``
            (EoMT's ``max_hue_delta``, 18).
        prob (float): Probability of each step and of each order (0.5).
    """

    def __init__(self,
                 brightness_delta: float = 32,
                 contrast: float = 0.5,
                 saturation: float = 0.5,
                 hue_delta: float = 18,
                 prob: float = 0.5):
        super().__init__()
        if not 0 <= hue_delta <= 180:
            raise ValueError(f'hue_delta={hue_delta} degrees: expected 0 to '
                             '180 (EoMT: 18)')
        self.brightness = brightness_delta / 255.0
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue_delta / 360.0
        self.prob = prob

    def draw(self) -> List[JitterStep]:
        """The steps of one image, in order: ``(name, factor)`` for each of
        ``'brightness'``, ``'contrast'``, ``'saturation'``, ``'hue'`` that
        is applied (hue: the shift as a fraction of the circle)."""
        steps = []
        if self._coin():
            steps.append(('brightness', self._uniform(1.0, self.brightness)))
        contrast_first = self._coin()
        parts = [self._draw_contrast, self._draw_saturation_and_hue]
        for part in (parts if contrast_first else parts[::-1]):
            steps += part()
        return steps

    def _coin(self) -> bool:
        return np.random.rand() < self.prob

    @staticmethod
    def _uniform(center: float, half_width: float) -> float:
        return float(
            np.random.uniform(center - half_width, center + half_width))

    def _draw_contrast(self) -> List[JitterStep]:
        if self._coin():
            return [('contrast', self._uniform(1.0, self.contrast))]
        return []

    def _draw_saturation_and_hue(self) -> List[JitterStep]:
        steps = []
        if self._coin():
            steps.append(('saturation', self._uniform(1.0, self.saturation)))
        if self._coin():
            steps.append(('hue', self._uniform(0.0, self.hue)))
        return steps

    def transform(self, results: dict) -> dict:
        results['img'] = apply_jitter(results['img'], self.draw())
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness=1+-{self.brightness:.4f}, '
                f'contrast=1+-{self.contrast}, saturation=1+-'
                f'{self.saturation}, hue=+-{self.hue:.4f} of the circle, '
                f'prob={self.prob})')


def apply_jitter(image: np.ndarray, steps: List[JitterStep]) -> np.ndarray:
    """``steps`` (as :meth:`EoMTColorJitter.draw` returns them) applied in
    order to a BGR uint8 H x W x 3 image; a new array."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f'EoMTColorJitter needs a BGR uint8 H x W x 3 image (as '
            f'LoadImageFromFile gives by default), got {image.dtype} '
            f'{image.shape}')
    # RGB, channels first, float32 holding the uint8 values.
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(
        2, 0, 1).float()
    adjust = dict(
        brightness=_brightness,
        contrast=_contrast,
        saturation=_saturation,
        hue=_hue)
    for name, factor in steps:
        rgb = adjust[name](rgb, factor)
    bgr = rgb.to(torch.uint8).permute(1, 2, 0).numpy()[..., ::-1]
    return np.ascontiguousarray(bgr)


def _to_uint8_values(x: Tensor) -> Tensor:
    """Clip to [0, 255] and round down, as a uint8 result would be."""
    return x.clamp(0, 255).floor()


def _grey(rgb: Tensor) -> Tensor:
    red, green, blue = rgb.unbind(0)
    luma = (red * _GREY_WEIGHTS[0]).add(
        green, alpha=_GREY_WEIGHTS[1]).add(
            blue, alpha=_GREY_WEIGHTS[2])
    return luma.floor().unsqueeze(0)


def _blend(rgb: Tensor, other: Tensor, factor: float) -> Tensor:
    """``factor * rgb + (1 - factor) * other``."""
    return _to_uint8_values((rgb * factor).add(other, alpha=1.0 - factor))


def _brightness(rgb: Tensor, factor: float) -> Tensor:
    return _to_uint8_values(rgb * factor)


def _contrast(rgb: Tensor, factor: float) -> Tensor:
    return _blend(rgb, _grey(rgb).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation(rgb: Tensor, factor: float) -> Tensor:
    return _blend(rgb, _grey(rgb), factor)


def _hue(rgb: Tensor, shift: float) -> Tensor:
    """Rotate the hue by ``shift`` (a fraction of the circle) in HSV."""
    unit = rgb * (1.0 / 255)
    red, green, blue = unit.unbind(0)
    value = unit.amax(0)
    chroma = value - unit.amin(0)
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    saturation = chroma / torch.where(grey, torch.ones_like(value), value)
    # Hue in sixths of the circle, from the channel holding the maximum
    # (red wins ties, then green).
    sixths = torch.where(
        red == value, (green - blue) / safe_chroma,
        torch.where(green == value, 2.0 + (blue - red) / safe_chroma,
                    4.0 + (red - green) / safe_chroma))
    sixths = torch.where(grey, torch.zeros_like(sixths), sixths)
    hue = torch.remainder(sixths / 6.0 + shift, 1.0)
    return _to_uint8_values(_hsv_to_rgb(hue, saturation, value) * 255.999)


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    sector_float = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector_float
    sector = sector_float.long() % 6
    low = (value * (1.0 - saturation)).clamp(0, 1)
    falling = (value * (1.0 - saturation * fraction)).clamp(0, 1)
    rising = (value * (1.0 - saturation * (1.0 - fraction))).clamp(0, 1)
    # (red, green, blue) of each sector of the hue circle.
    table = [(value, rising, low), (falling, value, low), (low, value, rising),
             (low, falling, value), (rising, low, value),
             (value, low, falling)]
    channels = []
    for channel in range(3):
        out = torch.zeros_like(value)
        for index, sector_values in enumerate(table):
            out = torch.where(sector == index, sector_values[channel], out)
        channels.append(out)
    return torch.stack(channels)
