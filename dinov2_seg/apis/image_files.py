"""Image files to segment and the files their results go to: inputs
expanded from files, folders and globs, read and run through the inference
pipeline in loader workers, results written as a palette PNG and an
overlay (``tools/inference.py``)."""
import glob
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import mmcv
import numpy as np
from torch.utils.data import Dataset

from dinov2_seg.datasets.pipelines import inference_inputs
from dinov2_seg.visualization.segmentation import (overlay_segmentation,
                                                   save_label_png)

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def _fixed_part(pattern: str) -> str:
    """The folder a glob pattern starts from: its parts before the first
    wildcard ('photos' for 'photos/**/*.jpg')."""
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or os.curdir


def expand_inputs(patterns: List[str]) -> List[Tuple[str, str]]:
    """(file, name) pairs: files as given, folders' images (recursively,
    sorted), glob matches; a pattern matching nothing is kept so that it is
    reported. ``name`` is where the results go under ``--out-dir``, without
    suffix: the path below the folder (or the glob's fixed part), so that
    same-named images of different sub-folders stay apart; a file's name.
    A file given twice is kept once."""
    found = []
    for pattern in patterns:
        if osp.isdir(pattern):
            for root, _, names in sorted(os.walk(pattern)):
                found += [(osp.join(root, n),
                           osp.relpath(osp.join(root, n), pattern))
                          for n in sorted(names)
                          if n.lower().endswith(IMAGE_SUFFIXES)]
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            base = _fixed_part(pattern)
            found += [(m, osp.relpath(m, base))
                      for m in matches] or [(pattern, osp.basename(pattern))]
        else:
            found.append((pattern, osp.basename(pattern)))
    unique, seen = [], set()
    for path, name in found:
        if osp.abspath(path) not in seen:
            seen.add(osp.abspath(path))
            unique.append((path, osp.splitext(name)[0]))
    return unique


def check_outputs_differ(inputs: List[Tuple[str, str]], out_dir: str) -> None:
    """Refuse inputs whose results would overwrite each other's.

    Raises:
        ValueError: naming the inputs and the file they would share.
    """
    by_name: Dict[str, List[str]] = {}
    for path, name in inputs:
        by_name.setdefault(osp.normcase(name), []).append(path)
    clashes = [(name, paths) for name, paths in by_name.items()
               if len(paths) > 1]
    if clashes:
        listed = '; '.join(
            f"{' and '.join(paths)} -> {osp.join(out_dir, name)}.png"
            for name, paths in clashes[:5])
        raise ValueError(
            f'{len(clashes)} output file(s) would be written by more than '
            f'one input ({listed}). Give the folder that holds them (its '
            'sub-folders are kept under --out-dir), rename them, or run them '
            'with separate --out-dir.')


def read_image(path: str) -> np.ndarray:
    """BGR image as cv2 reads it; OSError/ValueError if it cannot be."""
    if not osp.isfile(path):
        raise FileNotFoundError('no such file')
    image = mmcv.imread(path)
    if image is None:
        raise ValueError('not a readable image')
    return image


def write_results(item: dict, labels: np.ndarray, dataset_meta: dict,
                  out_dir: str, opacity: float) -> List[str]:
    """The label PNG ``NAME.png`` and the overlay ``NAME_overlay.jpg`` of
    one :class:`ImageFiles` item under ``out_dir``; the files written.

    Raises:
        OSError: naming a file that could not be written.
    """
    stem = osp.join(out_dir, item['name'])
    os.makedirs(osp.dirname(stem), exist_ok=True)
    label_file, overlay_file = f'{stem}.png', f'{stem}_overlay.jpg'
    save_label_png(labels, dataset_meta['palette'], label_file)
    overlay = overlay_segmentation(item['image'], labels, dataset_meta,
                                   opacity)
    # cv2 reports a failed write by its return value only.
    if not cv2.imwrite(overlay_file, overlay[..., ::-1]):
        raise OSError(f'could not write {overlay_file}')
    return [label_file, overlay_file]


class ImageFiles(Dataset):
    """Images read and run through the inference pipeline in the loader's
    worker processes; an unreadable file yields its error instead."""

    def __init__(self, inputs: List[Tuple[str, str]], pipeline: list):
        self.inputs = inputs
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        path, name = self.inputs[index]
        try:
            image = read_image(path)
        except (OSError, ValueError) as error:  # reported, the batch goes on
            return dict(path=path, error=str(error))
        return dict(
            path=path,
            name=name,
            image=image,
            inputs=inference_inputs(self.pipeline, image))
