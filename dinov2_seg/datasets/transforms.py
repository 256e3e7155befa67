"""Label loading whose read errors name the file.

mmseg's ``LoadAnnotations`` decodes label PNGs from bytes, so a corrupt or
truncated file fails with PIL's "cannot identify image file <BytesIO ...>"
or "Truncated File Read", which leaves a user of a 20,000-image dataset
guessing. This subclass adds the path and what a label file should hold,
and is registered under mmseg's name, so every config (the user's own too)
gets it.
"""
import zlib

from mmseg.datasets.transforms import LoadAnnotations as _LoadAnnotations
from mmseg.registry import TRANSFORMS

# What decoding a broken file raises: PIL UnidentifiedImageError / OSError
# (not an image, truncated), SyntaxError (broken PNG chunks), zlib.error and
# ValueError (corrupt data); the cv2 backend returns None, hence
# AttributeError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, AttributeError, zlib.error)


@TRANSFORMS.register_module(name='LoadAnnotations', force=True)
class LoadAnnotations(_LoadAnnotations):
    """mmseg's ``LoadAnnotations``; a label file that cannot be decoded is an
    ``OSError`` naming it (a missing one stays mmseg's FileNotFoundError,
    which names it already)."""

    def _load_seg_map(self, results: dict) -> None:
        try:
            super()._load_seg_map(results)
        except FileNotFoundError:
            raise
        except _DECODE_ERRORS as error:
            raise OSError(
                f'Cannot read the label map {results["seg_map_path"]} '
                f'({type(error).__name__}: {error}); expected an image '
                'whose pixel values are class indices (an 8-bit grey or '
                'palette PNG)') from error
