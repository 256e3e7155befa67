"""Multi-scale flip test on top of :class:`BatchedEncoderDecoder`."""
from typing import Dict, List, Tuple

from mmengine.structures import PixelData
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.utils import SampleList

from .batched_encoder_decoder import View, label_map


@MODELS.register_module()
class BatchedSegTTAModel(SegTTAModel):
    """mmseg's SegTTAModel (softmax probabilities averaged over the views)
    with the views of one scale, i.e. the two flips of every image of the
    batch at that scale, sharing batched windows, and each view merged
    straight at the original resolution
    (:meth:`BatchedEncoderDecoder.slide_logits`).

    mmengine's BaseTTAModel runs the whole test step once per view, so
    mmseg materialises each view's full-size canvas and its resize; this
    override of ``test_step`` only keeps the running probability sums and
    the logits of the views of one scale at the original sizes. Images of a
    batch may differ in size. The merged sample is the first (unflipped,
    first-scale) view's, with ``pred_sem_seg`` and, as ``seg_logits``, the
    averaged probabilities. Modules whose test_cfg disables
    ``fast_inference`` (or that are not batched) take the stock path.
    """

    def test_step(self, data) -> SampleList:
        if not getattr(self.module, 'uses_fast_slide', False):
            return super().test_step(data)
        augmentations = [
            self.module.preprocess_views(batch) for batch in _split_views(data)
        ]
        # The views of one scale (both flips of every image of the batch,
        # whatever the images' sizes) share their window batches; only
        # their logits at the original sizes are held at once.
        # A scale is told by its rank among an image's view sizes, in the
        # pipeline's order (scales outermost): the packed samples do not
        # record the Resize target.
        by_scale: Dict[int, List[Tuple[int, View]]] = {}
        for index in range(len(augmentations[0])):
            ranks: Dict[Tuple[int, ...], int] = {}
            for views in augmentations:
                image, sample = views[index]
                rank = ranks.setdefault(tuple(image.shape), len(ranks))
                by_scale.setdefault(rank, []).append(
                    (index, (image, sample.metainfo)))
        probs: List = [0] * len(augmentations[0])
        for group in by_scale.values():
            logits = self.module.slide_logits([view for _, view in group])
            for (index, _), view_logits in zip(group, logits):
                probs[index] = probs[index] + view_logits.softmax(dim=0)
        merged = []
        for (_, sample), image_probs in zip(augmentations[0], probs):
            image_probs = image_probs / len(augmentations)
            sample.set_data(
                dict(
                    seg_logits=PixelData(data=image_probs),
                    pred_sem_seg=PixelData(data=label_map(image_probs))))
            merged.append(sample)
        return merged


def _split_views(data) -> list:
    """One data batch per augmentation, as mmengine's BaseTTAModel splits
    the test loader's output."""
    if isinstance(data, dict):
        count = len(data[next(iter(data))])
        return [{
            key: value[i]
            for key, value in data.items()
        } for i in range(count)]
    count = len(data[0])
    return [[item[i] for item in data] for i in range(count)]
