"""Images of every mode made the 8-bit, 3-channel BGR the models take.

The dataset pipelines and ``tools/inference.py`` read files with cv2's
``IMREAD_COLOR`` (mmcv's ``LoadImageFromFile`` and ``mmcv.imread``): a grey
file is repeated into three channels, the alpha of a BGRA file dropped, a
16-bit file reduced to its high byte. An array given to
``inference_segmentor`` gets exactly that conversion here, so that an image
segments the same whether passed as a file or as the array cv2 reads with
``IMREAD_UNCHANGED``; an array of another kind is refused, naming it.
"""
import numpy as np

from .errors import DataFileError


class ImageModeError(DataFileError, ValueError):
    """An image array of a kind no conversion is defined for."""


def _mode(image: np.ndarray) -> str:
    return f"{image.dtype} array of shape {tuple(image.shape)}"


def as_bgr_uint8(image: np.ndarray, source: str = 'image') -> np.ndarray:
    """``image`` as cv2's ``IMREAD_COLOR`` would have read its file: uint8
    BGR, (H, W, 3).

    Args:
        image: (H, W) grey, (H, W, 1) grey, (H, W, 3) BGR or (H, W, 4)
            BGRA; uint8, or uint16 (its high byte kept, as cv2 reduces 16-bit
            files).
        source: What the array is, for the error message.

    Raises:
        ImageModeError: naming ``source`` and its dtype and shape for other
            dtypes (floats: scale them to 0..255 and convert to uint8
            first) or channel counts.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageModeError(
            f'{source}: a {_mode(image)}; expected uint8 (or uint16) pixel '
            'values as cv2.imread returns them (for floats in [0, 1]: '
            'np.clip(image * 255, 0, 255).round().astype(np.uint8))')
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    elif image.ndim == 2:
        channels = 1
    else:
        raise ImageModeError(
            f'{source}: a {_mode(image)}; expected (H, W) or (H, W, 1) grey, '
            '(H, W, 3) BGR or (H, W, 4) BGRA')
    if channels == 1:
        grey = image.reshape(image.shape[:2])
        return np.repeat(grey[..., None], 3, axis=2)
    if channels == 4:  # BGRA: cv2 drops the alpha (no blending)
        return np.ascontiguousarray(image[..., :3])
    return image
