"""Multi-scale flip test on top of :class:`BatchedEncoderDecoder`."""
from typing import Dict, List, Tuple

from mmengine.structures import PixelData
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor


@MODELS.register_module()
class BatchedSegTTAModel(SegTTAModel):
    """mmseg's SegTTAModel (softmax probabilities averaged over the views)
    with the views of one size, i.e. the two flips of a scale, sharing
    batched windows, and each view merged straight at the original
    resolution (:meth:`BatchedEncoderDecoder.slide_logits`).

    mmengine's BaseTTAModel runs the whole test step once per view, so
    mmseg materialises each view's full-size canvas and its resize; this
    override of ``test_step`` only keeps the running probability sum and the
    current views' logits at the original size. The merged sample is the
    first (unflipped, first-scale) view's, with ``pred_sem_seg`` and, as
    ``seg_logits``, the averaged probabilities. Modules whose test_cfg
    disables ``fast_inference`` (or that are not batched) take the stock
    path.
    """

    def test_step(self, data) -> SampleList:
        if not getattr(self.module, 'uses_fast_slide', False):
            return super().test_step(data)
        views = [
            self.module.data_preprocessor(view, False)
            for view in _split_views(data)
        ]
        merged = []
        for index, sample in enumerate(views[0]['data_samples']):
            by_size: Dict[Tuple[int, ...], List[Tuple[Tensor, dict]]] = {}
            for view in views:
                image = view['inputs'][index]
                by_size.setdefault(tuple(image.shape), []).append(
                    (image, view['data_samples'][index].metainfo))
            probs = 0
            for group in by_size.values():
                for logits in self.module.slide_logits(group):
                    probs = probs + logits.softmax(dim=0)
            probs = probs / len(views)
            sample.set_data(
                dict(
                    seg_logits=PixelData(data=probs),
                    pred_sem_seg=PixelData(data=probs.argmax(0,
                                                             keepdim=True))))
            merged.append(sample)
        return merged


def _split_views(data) -> list:
    """One data batch per augmentation, as mmengine's BaseTTAModel splits
    the test loader's output."""
    if isinstance(data, dict):
        count = len(data[next(iter(data))])
        return [{key: value[i] for key, value in data.items()}
                for i in range(count)]
    count = len(data[0])
    return [[item[i] for item in data] for i in range(count)]
