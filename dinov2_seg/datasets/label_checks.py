"""What a label map must be for the config that reads it, and what to say
when it is not.

mmseg reads whatever a label file holds: a value beyond the classes is
counted by no class and silently changes the metric (two planted blocks of
ids 7 and 9 in one shapes label move mIoU from 94.59 to 94.38), a colour
label ends in an IndexError inside the metric, a label of another size in a
shape error far from the file. The project's label loader
(:class:`~dinov2_seg.datasets.transforms.DinoLoadAnnotations`) and
``tools/check_dataset.py`` both use these functions, so they agree on what
is wrong and say it the same way: the file, the values or sizes found, the
config's ``num_classes`` and ``reduce_zero_label``, and the likely cause.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

# The label value mmseg's losses, metrics and padding treat as "no class".
IGNORE_INDEX = 255
_SHOWN_VALUES = 8


def class_indices(raw: np.ndarray, reduce_zero_label: bool,
                  label_map: Optional[dict]) -> np.ndarray:
    """A one-channel label map as mmseg defines its classes: with
    ``reduce_zero_label`` 0 becomes the ignore index and k becomes k - 1
    (255 stays 255), then the dataset's ``label_map`` (old -> new, each
    pixel mapped once). 8-bit maps stay 8-bit; wider ones keep their
    values (a 16-bit 300 is not wrapped to 44)."""
    label = raw
    if reduce_zero_label:
        if label.dtype == np.uint8:  # mmseg's own arithmetic: 0 - 1 -> 255
            label = np.where(label == 0, 255, label - 1).astype(np.uint8)
            label[label == 254] = IGNORE_INDEX
        else:
            wide = label.astype(np.int64)
            label = np.where((wide == 0) | (wide == IGNORE_INDEX),
                             IGNORE_INDEX, wide - 1)
    if label_map:
        original = label.copy()
        for old, new in label_map.items():
            label[original == old] = new
    return label


def _listed(values: Sequence[int]) -> str:
    shown = ', '.join(str(int(v)) for v in values[:_SHOWN_VALUES])
    more = len(values) - _SHOWN_VALUES
    return shown + (f' and {more} more' if more > 0 else '')


def channel_problem(raw: np.ndarray, path: str, num_classes: Optional[int],
                    reduce_zero_label: bool) -> Optional[str]:
    """A label with colour (or alpha) channels instead of one class index
    per pixel."""
    if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1):
        return None
    channels = raw.shape[2] if raw.ndim == 3 else raw.ndim
    kind = {
        3: 'an RGB colour image',
        4: 'an RGBA colour image',
        2: 'grey with an alpha channel'
    }.get(channels, 'not a 2-D map')
    return (f'Label map {path} has {channels} channels ({kind}, shape '
            f'{tuple(raw.shape)}); a label map holds one class index per '
            'pixel (an 8-bit grey or palette PNG). Likely cause: '
            'colour-coded labels: convert them with the palette (each '
            "class's colour -> its index, other colours -> 255); config: "
            f'num_classes={num_classes}, reduce_zero_label='
            f'{reduce_zero_label}')


def size_problem(label_shape: Sequence[int], image_shape: Sequence[int],
                 path: str) -> Optional[str]:
    """A label whose (height, width) is not its image's."""
    label_hw, image_hw = tuple(label_shape[:2]), tuple(image_shape[:2])
    if label_hw == image_hw:
        return None
    return (f'Label map {path} is {label_hw[0]}x{label_hw[1]} (HxW) but its '
            f'image is {image_hw[0]}x{image_hw[1]}: a label must have its '
            "image's size (likely another image's label, or one resized or "
            'rotated separately)')


def out_of_range_values(label: np.ndarray, num_classes: int) -> np.ndarray:
    """The sorted values of ``label`` (class indices) outside
    ``[0, num_classes)`` other than the ignore index."""
    if label.size == 0 or (label.min() >= 0 and label.max() < num_classes):
        return np.zeros(0, np.int64)  # the common case: one fast pass each
    bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
    if not bad.any():
        return np.zeros(0, np.int64)
    return np.unique(label[bad]).astype(np.int64)


def _likely_cause(bad: np.ndarray, num_classes: int,
                  reduce_zero_label: bool) -> str:
    if not reduce_zero_label and bad.tolist() == [num_classes]:
        return ('labels stored 1-based (0 = unlabelled, as ADE20K\'s): set '
                'reduce_zero_label=True; or num_classes one too small')
    if int(bad.max()) >= 2 * max(num_classes, 8) or len(bad) > num_classes:
        return ('values that are no class indices: colour-coded labels '
                'saved as grey levels (convert the colours with the palette '
                'to class indices), or an ignore value other than 255 '
                '(remap it to 255); else a wrong num_classes')
    return (f'a wrong num_classes (the labels use classes up to '
            f'{int(bad.max())}: len(metainfo.classes) and the head\'s '
            'num_classes must count them all), or an ignore value other '
            'than 255 (remap it to 255)')


def range_problem(label: np.ndarray, path: str, num_classes: int,
                  reduce_zero_label: bool) -> Optional[str]:
    """Values of a label map (after ``reduce_zero_label`` and the
    ``label_map``) that are neither a class nor the ignore index."""
    bad = out_of_range_values(label, num_classes)
    if not len(bad):
        return None
    pixels = int(np.isin(label, bad).sum())
    stored = (f' (stored as {_listed(bad + 1)}: reduce_zero_label=True '
              'subtracts 1)' if reduce_zero_label else '')
    return (f'Label map {path} holds class values {_listed(bad)}{stored} in '
            f'{pixels} pixels, outside [0, {num_classes}) and not the '
            f'ignore index {IGNORE_INDEX}; config: num_classes='
            f'{num_classes}, reduce_zero_label={reduce_zero_label}. Likely '
            f'cause: {_likely_cause(bad, num_classes, reduce_zero_label)}')


def label_problems(
    raw: np.ndarray,
    path: str,
    image_shape: Optional[Sequence[int]],
    num_classes: Optional[int],
    reduce_zero_label: bool,
    label_map: Optional[dict] = None
) -> Tuple[List[str], Optional[np.ndarray]]:
    """Everything wrong with a decoded label file for its config (an empty
    list if nothing), and its class indices (:func:`class_indices`; None
    for a colour label, whose other checks are then skipped): channels,
    the size against ``image_shape`` and the values against
    ``num_classes`` (each when known)."""
    channels = channel_problem(raw, path, num_classes, reduce_zero_label)
    if channels:
        return [channels], None
    problems = []
    if image_shape is not None:
        size = size_problem(raw.shape, image_shape, path)
        if size:
            problems.append(size)
    label = class_indices(
        raw.reshape(raw.shape[:2]), reduce_zero_label, label_map)
    if num_classes is not None:
        values = range_problem(label, path, num_classes, reduce_zero_label)
        if values:
            problems.append(values)
    return problems, label
