"""Label loading whose read errors name the file, and that checks each
label map against the config.

mmseg's ``LoadAnnotations`` decodes label PNGs from bytes, so a corrupt or
truncated file fails with PIL's "cannot identify image file <BytesIO ...>"
or "Truncated File Read" (or, with the cv2 backend, an AttributeError on the
``None`` that cv2 returns), which leaves a user of a 20,000-image dataset
guessing. This subclass decodes the file itself and turns a failed decode
into an error naming the path and what a label file should hold. It is
registered under its own name, ``DinoLoadAnnotations``, which the project's
pipelines use; mmseg's ``LoadAnnotations`` stays mmseg's for everyone else.
Only the decode is guarded: an error anywhere else (a bug) stays as it is.

Each decoded label is then checked (:mod:`.label_checks`): one channel, its
image's size, and (given ``num_classes``, which the tools set from the
dataset's classes: :func:`.pipelines.set_label_checks`) values in
``[0, num_classes)`` or 255. A failed check is a ``LabelMapError`` naming
the file, what was found, the config's settings and the likely cause.
"""
import zlib
from typing import Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from .errors import LabelMapError, MissingFileError, UnreadableFileError
from .label_checks import label_problems

# What decoding broken bytes raises: PIL UnidentifiedImageError / OSError
# (not an image, truncated), SyntaxError (broken PNG chunks), zlib.error and
# ValueError (corrupt data); cv2.error (empty input) is an Exception
# subclass of its own, caught by name below.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, zlib.error)


def _is_cv2_error(error: Exception) -> bool:
    return type(error).__module__ == 'cv2' and type(error).__name__ == 'error'


@TRANSFORMS.register_module()
class DinoLoadAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that checks what it reads.

    A label file that cannot be decoded is an ``UnreadableFileError`` (an
    OSError) naming it, a missing one a ``MissingFileError`` (a
    FileNotFoundError) naming it and its image; a label map with colour
    channels, of another size than its image, or (with ``num_classes``)
    with values outside ``[0, num_classes)`` other than 255 is a
    ``LabelMapError``.

    Args:
        num_classes: The dataset's number of classes (``None``: values
            are not checked). The tools fill it in from the dataset's
            classes.
        check_labels: ``False`` skips the checks (only the decode is
            guarded), e.g. to time them.
        **kwargs: mmseg's ``LoadAnnotations`` arguments.
    """

    def __init__(self,
                 num_classes: Optional[int] = None,
                 check_labels: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.check_labels = check_labels

    def _decode(self, path: str) -> np.ndarray:
        """The label map in ``path`` as decoded (its channels and dtype).

        Raises:
            UnreadableFileError: naming ``path`` if its bytes are no image.
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
            reason = ' '.join(reason.split())  # one line
            raise UnreadableFileError(
                f'Cannot read the label map {path} ({reason}); expected an '
                'image whose pixel values are class indices (an 8-bit grey '
                'or palette PNG)') from cause
        return label

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        try:
            raw = self._decode(path)
        except FileNotFoundError as error:
            raise MissingFileError(
                f'Label map {path} does not exist: the image '
                f"{results.get('img_path')} has no label (check "
                'seg_map_suffix and the label folder)') from error
        # mmseg's semantics from here on: the dataset's reduce_zero_label
        # (0 becomes 255, the rest shift down) and its label_map.
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label != results['reduce_zero_label']:
            raise ValueError(
                f'DinoLoadAnnotations has reduce_zero_label='
                f'{self.reduce_zero_label} but the dataset '
                f"{results['reduce_zero_label']}; set it in one place")
        check = self.check_labels
        problems, label = label_problems(
            raw,
            path,
            # the image as decoded, before any resize of the pipeline
            results.get('ori_shape') if check else None,
            self.num_classes if check else None,
            self.reduce_zero_label,
            results.get('label_map'))
        if problems and check:
            raise LabelMapError(' '.join(problems))
        if label is None:  # colour channels, not checked: mmseg's squeeze
            label = raw.squeeze()
        results['gt_seg_map'] = label.astype(np.uint8, copy=False)
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{super().__repr__()[:-1]}, num_classes={self.num_classes}, '
                f'check_labels={self.check_labels})')
