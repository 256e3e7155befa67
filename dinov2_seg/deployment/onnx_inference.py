"""Whole-image inference with an exported window network: the config's test
resize, normalisation, slide windows and (optionally) the multi-scale flip
test around an onnxruntime session, giving the labels of
:func:`dinov2_seg.apis.inference.inference_segmentor`.

    segmentor = OnnxSegmentor('model.onnx', 'configs/voc2012_vits14_ms.py',
                              scales=3)
    labels = segmentor(cv2.imread('image.jpg'))  # (H, W) class indices

The steps around the network follow mmseg 1.x, in the same order and with
the same operations (torch's bilinear resize), so that the labels agree
with the PyTorch model up to the network's float differences.
"""
import copy
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor

from dinov2_seg.apis.inference import _dataset_meta, _without_annotations
from dinov2_seg.apis.runner_setup import select_tta_scales

ImageType = Union[str, np.ndarray]


class OnnxSegmentor:
    """Segment images with a window network written by
    ``tools/export_onnx.py``.

    Args:
        onnx_file: The exported network (its input size must be the
            config's slide crop size).
        config: The config it was exported from (path or object).
        scales: ``None`` for single-scale inference; N for the multi-scale
            flip test with the first N scales of an ms config, as
            ``init_segmentor(..., scales=N)``.
        providers: onnxruntime execution providers (default: CPU).
        cfg_options: Config overrides, as ``--cfg-options``.
        max_windows: Windows per onnxruntime call (exported networks take
            any batch size).

    Attributes:
        dataset_meta (dict): ``classes`` and ``palette`` of the config.
    """

    def __init__(self,
                 onnx_file: str,
                 config: Union[str, Config],
                 scales: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None,
                 cfg_options: Optional[dict] = None,
                 max_windows: int = 8):
        import onnxruntime
        cfg = Config.fromfile(config) if isinstance(
            config, str) else copy.deepcopy(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        self.session = onnxruntime.InferenceSession(
            onnx_file, providers=list(providers or ['CPUExecutionProvider']))
        self.input_name = self.session.get_inputs()[0].name
        window = tuple(self.session.get_inputs()[0].shape[2:])

        test_cfg = cfg.model.test_cfg
        if test_cfg.get('mode') != 'slide':
            raise ValueError(
                f'model.test_cfg.mode={test_cfg.get("mode")!r}: '
                "OnnxSegmentor runs the slide inference ('slide') of the "
                'linear and ms configs')
        self.crop = tuple(test_cfg.crop_size)
        self.stride = tuple(test_cfg.stride)
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
        self.max_windows = max_windows

        if scales is None:
            pipeline = copy.deepcopy(cfg.test_pipeline)
        else:
            cfg.tta_scale_count = scales
            pipeline = select_tta_scales(cfg, cfg.filename or 'the config')
        self.pipeline = _without_annotations(pipeline)
        self.multi_view = scales is not None
        self.dataset_meta = _dataset_meta(cfg)

    def __call__(self, image: ImageType) -> np.ndarray:
        """Segment one image (a path, or an HxWx3 BGR array as cv2 reads
        it): (H, W) int64 class indices."""
        if isinstance(image, np.ndarray) and image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        steps = copy.deepcopy(self.pipeline)
        if not isinstance(image, str):
            steps[0]['type'] = 'LoadImageFromNDArray'
        data = Compose(steps)(
            dict(img_path=image) if isinstance(image, str) else dict(
                img=image))
        views, samples = data['inputs'], data['data_samples']
        if not isinstance(views, list):
            views, samples = [views], [samples]
        logits = [
            self.view_logits(view, sample.metainfo)
            for view, sample in zip(views, samples)
        ]
        if not self.multi_view:
            return logits[0].argmax(0).numpy().astype(np.int64)
        # mmseg's SegTTAModel: the mean of the views' class probabilities.
        probabilities = sum(view.softmax(0) for view in logits) / len(logits)
        return probabilities.argmax(0).numpy().astype(np.int64)

    def view_logits(self, view: Tensor, meta: dict) -> Tensor:
        """Logits (C, H, W) of one resized (and maybe flipped) view, flipped
        back and resized to the original image, as mmseg's
        ``EncoderDecoder.postprocess_result`` does."""
        image = view.float()
        if self.bgr_to_rgb:
            image = image[[2, 1, 0]]
        image = ((image - self.mean) / self.std)[None]
        logits = self.slide(image)
        if meta.get('flip'):
            dims = (3, ) if meta['flip_direction'] == 'horizontal' else (2, )
            logits = logits.flip(dims=dims)
        return F.interpolate(
            logits,
            size=meta['ori_shape'],
            mode='bilinear',
            align_corners=self.align_corners)[0]

    def window_boxes(self, height: int, width: int) -> List[tuple]:
        """(y1, y2, x1, x2) of each window, as mmseg's slide_inference
        places them: a regular grid whose last row and column are moved
        back inside the image."""
        (crop_h, crop_w), (stride_h, stride_w) = self.crop, self.stride
        if height < crop_h or width < crop_w:
            raise ValueError(
                f'The resized image is {height}x{width}, smaller than the '
                f'{crop_h}x{crop_w} window: slide inference would run the '
                'network on a smaller input, which a fixed-size ONNX export '
                'cannot take')
        rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
        cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
        boxes = []
        for row in range(rows):
            for col in range(cols):
                y2 = min(row * stride_h + crop_h, height)
                x2 = min(col * stride_w + crop_w, width)
                boxes.append((y2 - crop_h, y2, x2 - crop_w, x2))
        return boxes

    def slide(self, image: Tensor) -> Tensor:
        """(1, C, H, W) logits of a normalised (1, 3, H, W) image: the
        windows' logits summed where they overlap, divided by the count."""
        height, width = image.shape[2:]
        boxes = self.window_boxes(height, width)
        total, count = None, torch.zeros(1, 1, height, width)
        for start in range(0, len(boxes), self.max_windows):
            chunk = boxes[start:start + self.max_windows]
            windows = torch.cat(
                [image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            outputs = torch.from_numpy(
                self.session.run(None, {self.input_name: windows.numpy()})[0])
            if total is None:
                total = torch.zeros(1, outputs.shape[1], height, width)
            for (y1, y2, x1, x2), logits in zip(chunk, outputs):
                total[:, :, y1:y2, x1:x2] += logits
                count[:, :, y1:y2, x1:x2] += 1
        return total / count
