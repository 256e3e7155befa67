from .batched_encoder_decoder import BatchedEncoderDecoder
from .batched_seg_tta import BatchedSegTTAModel
from .eomt import EoMTSegmentor

__all__ = ['BatchedEncoderDecoder', 'BatchedSegTTAModel', 'EoMTSegmentor']
