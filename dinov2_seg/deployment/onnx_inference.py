"""Whole-image inference with an exported window network (any family): the
config's test resize, normalisation, slide windows and (optionally) the
multi-scale flip test around an onnxruntime session, giving the labels of
:func:`dinov2_seg.apis.inference_segmentor`.

    segmentor = OnnxSegmentor('model.onnx', scales=3)  # config: the file's
    labels = segmentor(cv2.imread('image.jpg'))  # (H, W) class indices

The steps around the network are the PyTorch model's (the config's
pipeline, recorded in the file by the exporter, the data preprocessor's
normalisation, the slide windows by the config's rule and their merging at
the original size), so the labels agree with it up to the network's float
differences. They need torch and mmcv, not the model.
"""
import copy
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor

from dinov2_seg.datasets.pipelines import (ImageType, inference_inputs,
                                           select_tta_scales,
                                           test_dataset_meta,
                                           without_annotations)
from dinov2_seg.models.segmentors.window_merge import (axis_band_cache,
                                                       merge_slide_windows,
                                                       slide_window_grid)
from .onnx_metadata import read_metadata


class OnnxSegmentor:
    """Segment images with a window network written by
    ``tools/export_onnx.py``.

    Args:
        onnx_file: The exported network.
        config: The config it was exported from (path or object); default:
            the one the file records (files from this version's exporter).
        scales: ``None`` for single-scale inference; N for the multi-scale
            flip test with the first N scales of the config's TTA, as
            ``init_segmentor(..., scales=N)``.
        providers: onnxruntime execution providers (default: CPU).
        cfg_options: Config overrides, as ``--cfg-options``.
        max_windows: Windows per onnxruntime call (exported networks take
            any batch size).

    Attributes:
        dataset_meta (dict): ``classes`` and ``palette`` of the config.
        summary (dict): What the file records (config name, family, window
            rule, normalisation...; empty for files without a record).
    """

    def __init__(self,
                 onnx_file: str,
                 config: Union[str, Config, None] = None,
                 scales: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None,
                 cfg_options: Optional[dict] = None,
                 max_windows: int = 8):
        import onnxruntime
        self.session = onnxruntime.InferenceSession(
            onnx_file, providers=list(providers or ['CPUExecutionProvider']))
        if config is None:
            self.summary, cfg = read_metadata(self.session, onnx_file)
            name = self.summary['config'] or onnx_file
        else:
            cfg = Config.fromfile(config) if isinstance(
                config, str) else copy.deepcopy(config)
            self.summary, name = {}, cfg.filename or 'the config'
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        self.input_name = self.session.get_inputs()[0].name
        window = tuple(self.session.get_inputs()[0].shape[2:])

        test_cfg = cfg.model.test_cfg
        if test_cfg.get('mode') != 'slide':
            raise ValueError(
                f'model.test_cfg.mode={test_cfg.get("mode")!r}: '
                "OnnxSegmentor runs the slide inference ('slide') of the "
                'configs')
        self.crop = tuple(test_cfg.crop_size)
        self.stride = tuple(test_cfg.stride)
        self.window_rule = test_cfg.get('window_rule', 'stride')
        if window != self.crop:
            raise ValueError(
                f'{onnx_file} takes {window[0]}x{window[1]} windows, the '
                f'config slides {self.crop[0]}x{self.crop[1]} ones '
                '(model.test_cfg.crop_size); export with --size '
                f'{self.crop[0]} {self.crop[1]}')
        preprocessor = cfg.model.data_preprocessor
        if preprocessor.get('test_cfg'):
            raise ValueError('model.data_preprocessor.test_cfg (padding of '
                             'test images) is not supported')
        self.bgr_to_rgb = preprocessor.get('bgr_to_rgb', False)
        self.mean = torch.tensor(preprocessor.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocessor.std).view(3, 1, 1)
        self.align_corners = cfg.model.decode_head.get('align_corners', False)
        self.axis_bands = axis_band_cache()
        self.max_windows = max_windows

        if scales is None:
            pipeline = copy.deepcopy(cfg.test_pipeline)
        else:
            cfg.tta_scale_count = scales
            pipeline = select_tta_scales(cfg, name)
        self.pipeline = without_annotations(pipeline)
        self.multi_view = scales is not None
        self.dataset_meta = test_dataset_meta(cfg)

    def __call__(self, image: ImageType) -> np.ndarray:
        """Segment one image (a path, or an HxWx3 BGR array as cv2 reads
        it): (H, W) int64 class indices."""
        data = inference_inputs(self.pipeline, image)
        views, samples = data['inputs'], data['data_samples']
        if not isinstance(views, list):
            views, samples = [views], [samples]
        if not self.multi_view:
            logits = self.view_logits(views[0], samples[0].metainfo)
            return logits.argmax(0).numpy().astype(np.int64)
        # mmseg's SegTTAModel: the mean of the views' class probabilities
        # (summed view by view, so only one view's logits are held).
        probabilities = 0
        for view, sample in zip(views, samples):
            probabilities = probabilities + self.view_logits(
                view, sample.metainfo).softmax(0)
        probabilities = probabilities / len(views)
        return probabilities.argmax(0).numpy().astype(np.int64)

    def view_logits(self, view: Tensor, meta: dict) -> Tensor:
        """(C, H, W) logits of one resized (and maybe flipped) view at the
        original image size: the windows' head logits mapped through the
        resize to the window, the overlap average, the un-flip and the
        resize to the original image (mmseg's slide inference and
        ``postprocess_result``), folded into per-window band matrices as
        :class:`~dinov2_seg.models.segmentors.BatchedEncoderDecoder`
        does."""
        image = view.float()
        if self.bgr_to_rgb:
            image = image[[2, 1, 0]]
        image = (image - self.mean) / self.std
        height, width = image.shape[1:]
        crop_h, crop_w = self.crop
        rows, cols = slide_window_grid(height, width, self.crop, self.stride,
                                       self.window_rule)
        if {b - a
                for a, b in rows} != {crop_h} or {b - a
                                                  for a, b in cols
                                                  } != {crop_w}:
            raise ValueError(
                f'The resized image is {height}x{width}, smaller than the '
                f'{crop_h}x{crop_w} window: slide inference would run the '
                'network on a smaller input, which a fixed-size ONNX export '
                'cannot take')
        return merge_slide_windows([(image, meta)], self.crop, self.stride,
                                   self.window_rule, self.max_windows,
                                   self.window_network_logits, self.axis_bands,
                                   self.align_corners)[0]

    def window_network_logits(self, windows: Tensor, metas: list) -> Tensor:
        """The exported network's logits of a (N, 3, h, w) batch of
        normalised windows (their metainfo is not needed)."""
        return torch.from_numpy(
            self.session.run(None, {self.input_name: windows.numpy()})[0])
