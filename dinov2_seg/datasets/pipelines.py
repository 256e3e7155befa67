"""What inference outside mmengine's runner takes from a config: the test
pipeline without annotations (or the multi-scale flip test's, cut to its
first scales), one image through it, and the test dataset's classes and
palette. Used by the Python API, the ONNX segmentor and the benchmark.
And the label checks of every dataloader's pipelines, which need the number
of classes of the dataset that reads them."""
import copy
from typing import Mapping, Union

import numpy as np
from mmcv.transforms import Compose
from mmengine.config import Config
from mmseg.registry import DATASETS

from .errors import UnreadableFileError, one_line_data_error
from .image_modes import as_bgr_uint8
from .layout import iter_datasets

ImageType = Union[str, np.ndarray]


def without_annotations(pipeline: list) -> list:
    """Drop (Dino)LoadAnnotations (inference has no ground truth), also
    from inside TestTimeAug's stages."""
    kept = []
    for step in pipeline:
        if step['type'].endswith('LoadAnnotations'):
            continue
        if step['type'] == 'TestTimeAug':
            step = dict(
                step,
                transforms=[
                    stage for stage in step['transforms']
                    if any(not t['type'].endswith('LoadAnnotations')
                           for t in stage)
                ])
        kept.append(step)
    return kept


def select_tta_scales(cfg: Config, config_path: str) -> list:
    """The TTA pipeline with its first ``cfg.tta_scale_count`` scales (the
    official notebook's HEAD_SCALE_COUNT; all when unset)."""
    if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
        raise KeyError(
            f'{config_path} defines no tta_pipeline/tta_model, so it has no '
            'multi-scale flip test (--tta, --scales); the official linear '
            'recipe has none, the ms configs (e.g. '
            'configs/ade20k_vits14_ms.py) have it')
    pipeline = copy.deepcopy(cfg.tta_pipeline)
    resizes = pipeline[-1].transforms[0]
    count = cfg.get('tta_scale_count') or len(resizes)
    if not 1 <= count <= len(resizes):
        raise ValueError(f'tta_scale_count={count}: {config_path} has '
                         f'{len(resizes)} test scales, choose 1..'
                         f'{len(resizes)}')
    pipeline[-1].transforms[0] = resizes[:count]
    return pipeline


def inference_inputs(pipeline: list, image: ImageType) -> dict:
    """One image (a path, or an array as cv2 reads it: BGR, BGRA, grey,
    8 or 16 bits, converted as :func:`.image_modes.as_bgr_uint8` says)
    through an inference pipeline (``model.pipeline``), ready for
    ``pseudo_collate``.

    Raises:
        UnreadableFileError: naming a file that cannot be decoded.
        ImageModeError: naming the dtype and shape of an array of another
            kind.
    """
    steps = copy.deepcopy(pipeline)
    if not isinstance(image, str):
        steps[0]['type'] = 'LoadImageFromNDArray'
        return Compose(steps)(dict(img=as_bgr_uint8(image, 'image array')))
    try:
        return Compose(steps)(dict(img_path=image))
    except AssertionError as error:  # mmcv's "failed to load image: PATH"
        message = one_line_data_error(error)
        if message is None:
            raise
        raise UnreadableFileError(message) from error


def test_dataset_meta(cfg: Config) -> dict:
    """``classes`` and ``palette`` of the config's test dataset (the first
    one inside dataset wrappers): its class's METAINFO updated with the
    config's ``metainfo``."""
    dataset = cfg.test_dataloader.dataset
    while 'datasets' in dataset or 'dataset' in dataset:
        dataset = (dataset.get('datasets') or [dataset.get('dataset')])[0]
    meta = dict(getattr(DATASETS.get(dataset.type), 'METAINFO', {}))
    meta.update(dataset.get('metainfo') or {})
    return meta


def dataset_classes(dataset: Mapping) -> tuple:
    """``classes`` of a dataset config: its class's METAINFO updated with
    the config's ``metainfo``."""
    kind = dataset['type']
    kind = DATASETS.get(kind) if isinstance(kind, str) else kind
    meta = dict(getattr(kind, 'METAINFO', {}))
    meta.update(dataset.get('metainfo') or {})
    return tuple(meta.get('classes') or ())


def set_label_checks(pipeline: list, num_classes: int) -> None:
    """Give each ``DinoLoadAnnotations`` of ``pipeline`` (also inside
    TestTimeAug's stages) the number of classes its labels are checked
    against, unless it has one; in place."""
    for step in pipeline:
        if step.get('type') == 'TestTimeAug':
            for stage in step['transforms']:
                set_label_checks(stage, num_classes)
        elif str(step.get('type', '')).endswith('DinoLoadAnnotations'):
            step.setdefault('num_classes', num_classes)


def configure_label_checks(cfg: Config) -> None:
    """The label checks of every dataloader's dataset (each against its
    own classes) and of ``tta_pipeline`` (the test dataset's): the label
    loader sees one file, not the dataset that lists it, so the tools tell
    it the number of classes here, when they read the config."""
    test_classes = None
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader or 'dataset' not in loader:
            continue
        for _, dataset in iter_datasets(loader['dataset'], key):
            if 'type' not in dataset or not dataset.get('pipeline'):
                continue
            classes = dataset_classes(dataset)
            if classes:
                set_label_checks(dataset['pipeline'], len(classes))
                if key == 'test_dataloader':
                    test_classes = test_classes or classes
    if test_classes and cfg.get('tta_pipeline'):
        set_label_checks(cfg.tta_pipeline, len(test_classes))
