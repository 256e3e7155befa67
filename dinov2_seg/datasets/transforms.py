"""Label loading whose read errors name the file.

mmseg's ``LoadAnnotations`` decodes label PNGs from bytes, so a corrupt or
truncated file fails with PIL's "cannot identify image file <BytesIO ...>"
or "Truncated File Read" (or, with the cv2 backend, an AttributeError on the
``None`` that cv2 returns), which leaves a user of a 20,000-image dataset
guessing. This subclass decodes the file itself and turns a failed decode
into an error naming the path and what a label file should hold. It is
registered under its own name, ``DinoLoadAnnotations``, which the project's
pipelines use; mmseg's ``LoadAnnotations`` stays mmseg's for everyone else.
Only the decode is guarded: an error anywhere else (a bug) stays as it is.
"""
import zlib

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

# What decoding broken bytes raises: PIL UnidentifiedImageError / OSError
# (not an image, truncated), SyntaxError (broken PNG chunks), zlib.error and
# ValueError (corrupt data); cv2.error (empty input) is an Exception
# subclass of its own, caught by name below.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, zlib.error)


def _is_cv2_error(error: Exception) -> bool:
    return type(error).__module__ == 'cv2' and type(error).__name__ == 'error'


@TRANSFORMS.register_module()
class DinoLoadAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations``; a label file that cannot be decoded is an
    ``OSError`` naming it (a missing one stays mmengine's FileNotFoundError,
    which names it already)."""

    def _decode(self, path: str) -> np.ndarray:
        """The label map in ``path`` as an (H, W) uint8 array.

        Raises:
            OSError: naming ``path`` if its bytes are no image.
        """
        data = fileio.get(path, backend_args=self.backend_args)
        cause = None
        try:
            label = mmcv.imfrombytes(
                data, flag='unchanged', backend=self.imdecode_backend)
        except _DECODE_ERRORS as error:
            label, cause = None, error
        except Exception as error:  # noqa: B902  (cv2.error only)
            if not _is_cv2_error(error):
                raise
            label, cause = None, error
        if label is None:  # cv2 returns None on undecodable bytes
            reason = (f'{type(cause).__name__}: {cause}'
                      if cause is not None else 'not decodable as an image')
            raise OSError(
                f'Cannot read the label map {path} ({reason}); expected an '
                'image whose pixel values are class indices (an 8-bit grey '
                'or palette PNG)') from cause
        return label.squeeze().astype(np.uint8)

    def _load_seg_map(self, results: dict) -> None:
        label = self._decode(results['seg_map_path'])
        # mmseg's semantics from here on: the dataset's reduce_zero_label
        # (0 becomes 255, the rest shift down) and its label_map.
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label != results['reduce_zero_label']:
            raise ValueError(
                f'DinoLoadAnnotations has reduce_zero_label='
                f'{self.reduce_zero_label} but the dataset '
                f"{results['reduce_zero_label']}; set it in one place")
        if self.reduce_zero_label:
            label = np.where(label == 0, 255, label - 1).astype(np.uint8)
            label[label == 254] = 255
        label_map = results.get('label_map')
        if label_map is not None:
            original = label.copy()  # each pixel mapped once
            for old, new in label_map.items():
                label[original == old] = new
        results['gt_seg_map'] = label
        results['seg_fields'].append('gt_seg_map')
