"""Up-front check that the configured dataset folders exist.

mmseg discovers a missing folder deep inside dataset construction and
reports a bare path; researchers setting up ADE20K or VOC for the first time
need to be told which layout is expected and which config key to change.
"""
import inspect
import os
import os.path as osp
from typing import Iterator, Mapping, Sequence, Tuple

from mmseg.registry import DATASETS

LAYOUT_HINTS = {
    'ADE20KDataset':
    'images/{training,validation}/*.jpg and '
    'annotations/{training,validation}/*.png (ADEChallengeData2016.zip '
    'unpacked)',
    'PascalVOCDataset':
    'JPEGImages/*.jpg, SegmentationClass/*.png and '
    'ImageSets/Segmentation/{train,val}.txt (VOCdevkit/VOC2012), plus '
    'SegmentationClassAug/*.png and ImageSets/Segmentation/aug.txt for the '
    'SBD-augmented split',
}
_GENERIC_HINT = ('the image and label folders named by data_prefix '
                 '(see configs/_base_/datasets/custom.py)')


def iter_datasets(dataset: Mapping, key: str) -> Iterator[Tuple[str, Mapping]]:
    """Yield (config key, dataset cfg) for a dataset and the ones it wraps
    (ConcatDataset's ``datasets``, RepeatDataset's ``dataset``)."""
    if 'datasets' in dataset:
        for index, child in enumerate(dataset['datasets']):
            yield from iter_datasets(child, f'{key}.datasets.{index}')
    elif 'dataset' in dataset:
        yield from iter_datasets(dataset['dataset'], f'{key}.dataset')
    else:
        yield key, dataset


def _default_suffix(dataset_type: str) -> str:
    cls = DATASETS.get(dataset_type) if isinstance(dataset_type, str) else None
    try:
        return inspect.signature(cls).parameters['img_suffix'].default
    except (TypeError, ValueError, KeyError):
        return ''


def _has_file_with_suffix(folder: str, suffix: str) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(name.endswith(suffix) for name in files):
            return True
    return False


def _problems(dataset: Mapping) -> list:
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or {}
    problems = []
    for field in ('img_path', 'seg_map_path'):
        if prefix.get(field) is not None:
            folder = osp.join(root, prefix[field])
            if not osp.isdir(folder):
                problems.append(f'folder {folder} (data_prefix.{field}) '
                                'does not exist')
    ann_file = dataset.get('ann_file')
    if ann_file and not osp.isfile(osp.join(root, ann_file)):
        problems.append(f'file {osp.join(root, ann_file)} (ann_file) does '
                        'not exist')
    if not problems and not ann_file and prefix.get('img_path') is not None:
        suffix = dataset.get('img_suffix') or _default_suffix(
            dataset.get('type'))
        folder = osp.join(root, prefix['img_path'])
        if not _has_file_with_suffix(folder, suffix):
            problems.append(f'folder {folder} holds no *{suffix} images')
    return problems


def check_dataset_paths(cfg: Mapping, loader_keys: Sequence[str]) -> None:
    """Raise FileNotFoundError if a dataset of the given dataloaders points at
    missing folders or files; the message names the expected layout and the
    config key to change. Remote paths (``s3://`` ...) are not checked."""
    for loader_key in loader_keys:
        loader = cfg.get(loader_key)
        if not loader or 'dataset' not in loader:
            continue
        for key, dataset in iter_datasets(loader['dataset'],
                                          f'{loader_key}.dataset'):
            if '://' in str(dataset.get('data_root', '')):
                continue
            problems = _problems(dataset)
            if not problems:
                continue
            dataset_type = dataset.get('type', '?')
            root = dataset.get('data_root') or '.'
            hint = LAYOUT_HINTS.get(dataset_type, _GENERIC_HINT)
            raise FileNotFoundError(
                f'Dataset of {key} ({dataset_type}) is not where the config '
                f'says: ' + '; '.join(problems) + '.\n'
                f'Expected under data_root {root!r} (relative to '
                f'{os.getcwd()}): {hint}.\n'
                'Put the data there (a symlink is fine) or change '
                f'{key}.data_root, e.g. `--cfg-options '
                f'{key}.data_root=/path/to/data`.')
