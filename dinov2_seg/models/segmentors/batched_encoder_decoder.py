"""EncoderDecoder whose slide inference batches the windows and merges them
at the original resolution."""
import contextlib
from typing import Any, ContextManager, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList
from torch import Tensor
from torch.utils._pytree import tree_map

from .compiled_backbone import compile_backbone, mark_batch_dynamic
from .window_merge import View, axis_band_cache, merge_slide_windows


def amp_dtype(setting: Union[bool, str], device_type: str) -> torch.dtype:
    """The autocast dtype of an ``amp`` setting: ``'bf16'``, ``'fp16'`` or
    True for bfloat16 where the device supports it, else float16."""
    if setting in ('bf16', 'bfloat16'):
        return torch.bfloat16
    if setting in ('fp16', 'float16'):
        return torch.float16
    if setting is not True:
        raise ValueError(f"test_cfg.amp={setting!r}: expected True, False, "
                         "'bf16' or 'fp16'")
    if device_type == 'cuda' and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def resolve_window_batch_size(setting: Optional[int], device_type: str) -> int:
    """Windows per backbone call for ``test_cfg.window_batch_size``: None
    means 8 on a GPU and 1 on a CPU, where a batch of windows runs slower
    per window than one at a time."""
    if setting is None:
        return 1 if device_type == 'cpu' else 8
    if int(setting) < 1:
        raise ValueError('test_cfg.window_batch_size must be >= 1, got '
                         f'{setting}')
    return int(setting)


def label_map(scores: Tensor) -> Tensor:
    """(1, H, W) class of the highest score per pixel: the first maximum,
    as ``argmax``, which ``max`` computes faster on CPU
    (docs/benchmarks.md)."""
    return scores.max(0, keepdim=True).indices


@MODELS.register_module()
class BatchedEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder with fast slide inference.

    mmseg runs one window per forward pass, resizes each window's logits to
    the window, adds them into a canvas of the scaled image (150 x 1920 x
    2561 floats for an ADE20K image at the ms recipe's largest scale),
    divides, un-pads, un-flips and resizes the canvas to the original image.
    Here the windows of one or more views go through the network in batches
    of ``window_batch_size``, and each window's head output is mapped
    straight into the original image by the same chain of resizes, folded
    into two small matrices per window (:mod:`.window_merge`): same logits
    up to float rounding, no canvas, no per-window full-size resize.
    :class:`BatchedSegTTAModel` uses this for the multi-scale flip test.

    Besides mmseg's ``mode``, ``crop_size`` and ``stride``, ``test_cfg``
    takes:

    - ``fast_inference`` (bool, default True): False runs mmseg's stock
      ``slide_inference`` (and the stock multi-scale flip test), the
      reference the fast path is tested against.
    - ``window_batch_size`` (int or None, default None): most windows per
      backbone call, so that large images or scales fit in GPU memory.
      None: 8 on a GPU, 1 on a CPU, where a batch of windows runs slower
      per window than one at a time (docs/benchmarks.md, CPU).
    - ``window_rule`` ('stride', 'spread' or 'stride_square', default
      'stride'): where the windows go
      (:func:`.window_merge.merge_slide_windows`); 'spread' is EoMT's
      evaluation, 'stride_square' Meta's DINOv3 one; mmseg's stock path
      has neither.
    - ``amp`` (bool | 'bf16' | 'fp16', default False): run the windows
      under autocast (True: bfloat16 where supported, else float16); the
      head and the merging stay float32.
    - ``compile`` (bool or dict of ``torch.compile`` options, default
      False): compile the network (:meth:`compile_network`) on the first
      window batch of the fast path, with a dynamic window-batch dimension
      (:mod:`.compiled_backbone`).

    A test batch may hold images of different sizes: the fast path
    normalises them one by one and batches their windows together; the
    stock path (mmseg's data preprocessor refuses a test batch of mixed
    sizes) takes them one at a time. Either way no padding reaches a
    window, and an image's labels do not depend on the batch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.axis_bands = axis_band_cache()

    @property
    def uses_fast_slide(self) -> bool:
        return (self.test_cfg.get('mode') == 'slide'
                and self.test_cfg.get('fast_inference', True)
                and self.out_channels > 1)

    def slide_inference(self, inputs: Tensor,
                        batch_img_metas: List[dict]) -> Tensor:
        if self.test_cfg.get('window_rule', 'stride') != 'stride':
            raise ValueError('mmseg\'s stock slide inference places windows '
                             "by stride only: test_cfg.window_rule="
                             f"{self.test_cfg.window_rule!r} needs "
                             'test_cfg.fast_inference=True')
        return super().slide_inference(inputs, batch_img_metas)

    def autocast(self, device_type: str) -> ContextManager:
        setting = self.test_cfg.get('amp', False)
        if not setting:
            return contextlib.nullcontext()
        return torch.autocast(device_type, amp_dtype(setting, device_type))

    def extract_feat(self, inputs: Tensor) -> Any:
        """:meth:`network_features`, under autocast at test time when
        ``test_cfg.amp`` is set. The network's cost is there; the head then
        reads float32 features, which keeps the labels of a bfloat16 run
        close to float32's."""
        if self.training or not self.test_cfg.get('amp', False):
            return self.network_features(inputs)
        with self.autocast(inputs.device.type):
            features = self.network_features(inputs)
        return tree_map(lambda feature: feature.float(), features)

    def network_features(self, inputs: Tensor) -> Any:
        """What the decode head reads: mmseg's backbone (and neck)
        features."""
        return super().extract_feat(inputs)

    def compile_network(self, **options: Any) -> None:
        """``torch.compile`` (``options``) the backbone's forward for the
        calls without gradients (:mod:`.compiled_backbone`); the neck and
        head, a small share of the time, stay eager."""
        compile_backbone(self.backbone, **options)

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        if not self.uses_fast_slide:
            return super().predict(inputs, data_samples)
        if data_samples is None:
            # As the stock path: without metas the logits stay at the input
            # size.
            data_samples = [
                SegDataSample(metainfo=dict(ori_shape=inputs.shape[2:]))
                for _ in inputs
            ]
        return self._predict_views(list(zip(inputs, data_samples)))

    def test_step(self, data: dict) -> SampleList:
        """As mmseg's, but each image is normalised on its own, so that a
        batch may hold images of different sizes (their windows are
        batched all the same)."""
        if not self.uses_fast_slide:
            return self.stock_test_step(data)
        return self._predict_views(self.preprocess_views(data))

    def stock_test_step(self, data: dict) -> SampleList:
        """mmseg's test step, image by image when the sizes differ: its
        data preprocessor asserts one size per test batch, and padding
        them to one (as in training) would put the padding into the
        windows and change the labels."""
        inputs = data['inputs']
        if len({tuple(image.shape[-2:]) for image in inputs}) <= 1:
            return super().test_step(data)
        samples = data.get('data_samples') or [None] * len(inputs)
        results = []
        for image, sample in zip(inputs, samples):
            single = dict(inputs=[image])
            if sample is not None:
                single['data_samples'] = [sample]
            results += super().test_step(single)
        return results

    val_step = test_step

    def preprocess_views(self, data: dict) -> List[Tuple[Tensor, Any]]:
        """The data preprocessor applied image by image: (network input,
        data sample) pairs."""
        views = []
        for image, sample in zip(data['inputs'], data['data_samples']):
            out = self.data_preprocessor(
                dict(inputs=[image], data_samples=[sample]), False)
            views.append((out['inputs'][0], out['data_samples'][0]))
        return views

    def _predict_views(self, views: List[Tuple[Tensor, Any]]) -> SampleList:
        logits = self.slide_logits([(x, s.metainfo) for x, s in views])
        for (_, sample), seg_logits in zip(views, logits):
            sample.set_data(
                dict(
                    seg_logits=PixelData(data=seg_logits),
                    pred_sem_seg=PixelData(data=label_map(seg_logits))))
        return [sample for _, sample in views]

    def slide_logits(self, views: Sequence[View]) -> List[Tensor]:
        """Slide-window logits of each view at its ``ori_shape``, as mmseg's
        ``slide_inference`` followed by ``postprocess_result`` (padding
        removed, flip undone, resized), with the windows of all the views
        batched together (windows of equal size, ``window_batch_size`` at
        most per call).

        Returns:
            list[Tensor]: (C, H, W) float32 logits per view.
        """
        batch_size = resolve_window_batch_size(
            self.test_cfg.get('window_batch_size'), views[0][0].device.type)
        return merge_slide_windows(views, self.test_cfg.crop_size,
                                   self.test_cfg.stride,
                                   self.test_cfg.get('window_rule', 'stride'),
                                   batch_size, self.window_logits,
                                   self.axis_bands, self.align_corners)

    def window_logits(self, crops: Tensor, metas: List[dict]) -> Tensor:
        """Float32 logits of a batch of windows as the decode head computes
        them before its final resize to the window (the resize is folded
        into the merge)."""
        head = self.decode_head
        compile_options = self.test_cfg.get('compile', False)
        if compile_options:
            self.compile_network(**(
                compile_options if isinstance(compile_options, dict) else {}))
            mark_batch_dynamic(crops)
        features = self.extract_feat(crops)
        if hasattr(head, 'predict_logits'):
            logits = head.predict_logits(features, metas, self.test_cfg)
        elif (type(head).predict is BaseDecodeHead.predict and
              type(head).predict_by_feat is BaseDecodeHead.predict_by_feat):
            # mmseg's predict is forward() then a resize to the window.
            logits = head.forward(features)
        else:  # any other head: its window-sized output
            logits = head.predict(features, metas, self.test_cfg)
        return logits.float()
