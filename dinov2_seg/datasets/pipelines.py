"""What inference outside mmengine's runner takes from a config: the test
pipeline without annotations (or the multi-scale flip test's, cut to its
first scales), one image through it, and the test dataset's classes and
palette. Used by the Python API, the ONNX segmentor and the benchmark."""
import copy
from typing import Union

import numpy as np
from mmcv.transforms import Compose
from mmengine.config import Config
from mmseg.registry import DATASETS

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
    """One image (a path, or an HxWx3 BGR array as cv2 reads it) through an
    inference pipeline (``model.pipeline``), ready for ``pseudo_collate``."""
    if isinstance(image, np.ndarray) and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    steps = copy.deepcopy(pipeline)
    if not isinstance(image, str):
        steps[0]['type'] = 'LoadImageFromNDArray'
    inputs = dict(img_path=image) if isinstance(image, str) else dict(
        img=image)
    return Compose(steps)(inputs)


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
