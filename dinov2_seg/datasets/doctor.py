"""Every image/label pair of a dataset checked before a long run
(``tools/check_dataset.py``).

The files are those the config's own dataset class lists (built through
mmseg's registry: the same ``data_list`` training reads), decoded by the
loaders of the dataset's own pipeline (mmcv's ``LoadImageFromFile`` and the
project's label loader, so with the config's decode backends), and judged
by the checks the label loader applies (:mod:`.label_checks`). On top of
what a run would trip over, a pair is also checked for what a run reads
without complaint: truncated files (cv2 decodes a truncated JPEG, the rest
of the image grey), labels stored as JPEG (lossy: the class values at
every edge change) and labels without an image (a suffix or name that does
not match). A pair's checks run in a DataLoader worker each.
"""
import os
import os.path as osp
from typing import List, Optional

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .errors import DataFileError, one_line_data_error
from .label_checks import (channel_problem, class_indices, range_problem,
                           size_problem)
from .transforms import DinoLoadAnnotations

# PIL's modes of label files, as the report names them.
LABEL_MODES = {
    'P': 'palette',
    'L': 'grey',
    '1': 'binary',
    'I;16': 'grey 16-bit',
    'I': 'grey 32-bit',
    'RGB': 'RGB',
    'RGBA': 'RGBA',
    'LA': 'grey+alpha',
}


def problem(level: str, kind: str, path: str, message: str) -> dict:
    """One finding: ``level`` error (a run fails or learns wrong labels) or
    warning, a ``kind`` to group by, the file and the one-line message."""
    return dict(level=level, kind=kind, file=path, message=message)


def _header(path: str) -> tuple:
    """(format, mode) from the file's header; (None, None) if PIL does not
    know it."""
    try:
        with Image.open(path) as image:
            return image.format, image.mode
    except (OSError, SyntaxError, ValueError):
        return None, None


def truncation(path: str) -> Optional[str]:
    """Why PIL cannot decode the whole file (``image file is truncated``),
    or None. Files whose format PIL does not know are not judged here."""
    try:
        with Image.open(path) as image:
            image.load()
    except Image.UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError) as error:
        return ' '.join(str(error).split())
    return None


def _loaders(dataset) -> tuple:
    """The image loader and a label loader with the pipeline's settings
    (mmseg's own LoadAnnotations is replaced by the project's, which
    keeps its backend and exposes the decode)."""
    image_loader, label_loader = LoadImageFromFile(), DinoLoadAnnotations()
    for step in getattr(dataset.pipeline, 'transforms', []):
        if isinstance(step, LoadImageFromFile):
            image_loader = step
        elif isinstance(step, DinoLoadAnnotations):
            label_loader = step
        elif isinstance(step, LoadAnnotations):
            label_loader = DinoLoadAnnotations(
                imdecode_backend=step.imdecode_backend,
                backend_args=step.backend_args)
    return image_loader, label_loader


def check_image(path: str, image_loader) -> tuple:
    """(image (H, W) or None, problems) of one image file."""
    if not osp.isfile(path):
        return None, [
            problem('error', 'missing_image', path,
                    f'Image {path} is listed but does not exist')
        ]
    cut = truncation(path)
    try:
        shape = image_loader(dict(img_path=path))['img'].shape[:2]
    except Exception as error:  # noqa: B902  (reported, the scan goes on)
        if cut:
            return None, [
                problem(
                    'error', 'truncated', path,
                    f'Image {path} is truncated ({cut}): the loader '
                    'cannot decode it')
            ]
        message = one_line_data_error(error) or (
            f'Cannot read the image {path} ({type(error).__name__}: '
            f"{' '.join(str(error).split())})")
        return None, [problem('error', 'unreadable', path, message)]
    if cut:
        return shape, [
            problem(
                'error', 'truncated', path,
                f'Image {path} is truncated ({cut}): the loader decodes '
                'what is there and fills the rest')
        ]
    return shape, []


def check_label(path: str, image_path: str, image_shape, label_loader,
                info: dict, num_classes: int) -> dict:
    """Mode, problems and class pixel counts of one label file."""
    found = dict(label_mode=None, problems=[], class_pixels=None)
    if not osp.isfile(path):
        found['problems'].append(
            problem(
                'error', 'missing_label', image_path,
                f'Image {image_path} has no label: {path} does not exist '
                '(check seg_map_suffix and the label folder)'))
        return found
    file_format, mode = _header(path)
    found['label_mode'] = LABEL_MODES.get(mode, mode)
    if file_format == 'JPEG':
        found['problems'].append(
            problem(
                'error', 'jpeg_label', path,
                f'Label map {path} is stored as JPEG: its lossy compression '
                'changes the class values along every edge; store labels '
                'as PNG (from the original class indices)'))
    cut = truncation(path)
    if cut:
        found['problems'].append(
            problem('error', 'truncated', path,
                    f'Label map {path} is truncated ({cut})'))
    try:
        raw = label_loader._decode(path)
    except DataFileError as error:
        if not cut:
            found['problems'].append(
                problem('error', 'unreadable', path, str(error)))
        return found
    reduce_zero_label = bool(info.get('reduce_zero_label'))
    channels = channel_problem(raw, path, num_classes, reduce_zero_label)
    if channels:
        found['problems'].append(
            problem('error', 'label_channels', path, channels))
        return found
    if image_shape is not None:
        size = size_problem(raw.shape, image_shape, path)
        if size:
            found['problems'].append(problem('error', 'size', path, size))
    label = class_indices(
        raw.reshape(raw.shape[:2]), reduce_zero_label, info.get('label_map'))
    values = range_problem(label, path, num_classes, reduce_zero_label)
    if values:
        found['problems'].append(
            problem('error', 'label_values', path, values))
    inside = label[(label >= 0) & (label < num_classes)].astype(np.int64)
    found['class_pixels'] = np.bincount(inside, minlength=num_classes).tolist()
    return found


class PairChecks(Dataset):
    """The checks of one dataset's pairs, one pair per item, so that a
    DataLoader runs them in its worker processes."""

    def __init__(self, dataset, num_classes: int):
        self.infos = [dataset.get_data_info(i) for i in range(len(dataset))]
        self.image_loader, self.label_loader = _loaders(dataset)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, index: int) -> dict:
        info = self.infos[index]
        image_path, label_path = info['img_path'], info.get('seg_map_path')
        shape, problems = check_image(image_path, self.image_loader)
        found = dict(
            image=image_path,
            label=label_path,
            label_mode=None,
            problems=problems,
            class_pixels=None)
        if label_path is not None:
            label = check_label(label_path, image_path, shape,
                                self.label_loader, info, self.num_classes)
            found.update(label, problems=problems + label['problems'])
        return found


def check_pairs(dataset, num_classes: int, workers: int) -> List[dict]:
    """The findings of every image/label pair of a built dataset, in its
    order, checked by ``workers`` processes (0: this one)."""
    loader = DataLoader(
        PairChecks(dataset, num_classes),
        batch_size=8,
        num_workers=workers,
        collate_fn=list)
    return [found for batch in loader for found in batch]


def labels_without_images(dataset) -> List[dict]:
    """Warnings for the label files in the dataset's label folder that no
    listed image uses (folder-listed datasets; one listed by an
    ``ann_file``, as VOC's splits, shares its folder with other splits)."""
    if getattr(dataset, 'ann_file', None):
        return []
    folder = dataset.data_prefix.get('seg_map_path')
    suffix = getattr(dataset, 'seg_map_suffix', '.png')
    if not folder or not osp.isdir(folder):
        return []
    used = {
        osp.normpath(dataset.get_data_info(i)['seg_map_path'])
        for i in range(len(dataset))
    }
    orphans = []
    for root, _, names in sorted(os.walk(folder, followlinks=True)):
        for name in sorted(names):
            path = osp.normpath(osp.join(root, name))
            if name.endswith(suffix) and path not in used:
                orphans.append(
                    problem(
                        'warning', 'label_without_image', path,
                        f'Label map {path} has no image (none named like '
                        'it with img_suffix in the image folder)'))
    return orphans
