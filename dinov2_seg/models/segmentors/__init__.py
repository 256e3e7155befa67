from .batched_encoder_decoder import BatchedEncoderDecoder
from .batched_seg_tta import BatchedSegTTAModel

__all__ = ['BatchedEncoderDecoder', 'BatchedSegTTAModel']
