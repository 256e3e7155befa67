"""EoMT: a DINOv2 or DINOv3 ViT that segments by itself (encoder-only mask
transformer), with the batched slide inference of
:class:`BatchedEncoderDecoder`."""
from typing import Any, List

from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..decode_heads.eomt_head import Prediction, num_upscale_for_patch
from .batched_encoder_decoder import BatchedEncoderDecoder
from .compiled_backbone import compile_for_inference


@MODELS.register_module()
class EoMTSegmentor(BatchedEncoderDecoder):
    """Runs a :class:`DinoVisionTransformer` or
    :class:`DinoV3VisionTransformer` whose last ``decode_head.num_blocks``
    blocks also carry the queries of an :class:`EoMTHead`.

    The queries go in front of the class and register / storage tokens, as
    in EoMT. DINOv3's RoPE rotates the last ``h * w`` tokens of every
    block's input (the patches), so the queries, like the class and storage
    tokens, carry no position; the block API (``prepare_tokens``,
    ``forward_block``, ``norm``, ``num_prefix_tokens``) is the same for
    both backbones. A head built with ``num_upscale=None`` gets EoMT's
    upsampling depth for the backbone's patch size (2 for 16).

    The "features" handed to the head are its predictions: in training one
    per block with queries (each made before the block, from the normalised
    tokens, and used for that block's attention mask) and one after the
    last block; at test time only the last, from a plain ViT pass. The
    head's ``predict_logits`` gives the slide windows' class maps before
    their resize, so the batched slide and multi-scale flip paths apply.

    The masking probabilities follow the training iteration, which
    :class:`EoMTMaskAnnealingHook` sets before each iteration (also after a
    resume); a masked training step without it is an error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.with_neck:
            raise ValueError('EoMTSegmentor takes no neck: the head reads '
                             'the ViT tokens; remove model.neck')
        depth = len(self.backbone.blocks)
        head = self.decode_head
        if not 0 < head.num_blocks <= depth:
            raise ValueError(
                f'decode_head.num_blocks={head.num_blocks}: the queries '
                f'must join between 1 and all {depth} blocks of the backbone')
        if head.embed_dims != self.backbone.embed_dim:
            raise ValueError(
                f'decode_head.embed_dims={head.embed_dims} differs from the '
                f'backbone width {self.backbone.embed_dim}; set it to the '
                "backbone's embed_dim")
        if head.upscale is None:
            head.build_upscale(num_upscale_for_patch(self.backbone.patch_size))

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        head = self.decode_head
        if head.masked_attention and head.iteration is None:
            # Without it the masking probabilities would silently stay
            # where they are (1 from the start) for the whole run.
            raise RuntimeError(
                'EoMTSegmentor: a training step with masked attention needs '
                'the training iteration, which nothing has set: add '
                "dict(type='EoMTMaskAnnealingHook') to custom_hooks (the "
                'EoMT configs do), or call decode_head.set_iteration(...) '
                'before the step')
        return super().loss(inputs, data_samples)

    def compile_network(self, **options: Any) -> None:
        """Compile :meth:`network_features` (the ViT with the head's
        queries in its last blocks), which runs the backbone's parts
        rather than its forward."""
        compile_for_inference(self, 'network_features', self.backbone,
                              **options)

    def network_features(self, inputs: Tensor) -> List[Prediction]:
        """The head's predictions (see the class docstring)."""
        backbone, head = self.backbone, self.decode_head
        prefix = backbone.num_prefix_tokens
        supervise_blocks = self.training and head.masked_attention
        tokens, grid = backbone.prepare_tokens(inputs)
        first = len(backbone.blocks) - head.num_blocks
        predictions = []
        for index in range(len(backbone.blocks)):
            attn_mask = None
            if index == first:
                tokens = head.add_queries(tokens)
            if index >= first and supervise_blocks:
                prediction = head.predict_masks(
                    backbone.norm(tokens), grid, prefix)
                predictions.append(prediction)
                attn_mask = head.attention_mask(prediction[0], grid,
                                                index - first, prefix)
            tokens = backbone.forward_block(index, tokens, attn_mask)
        predictions.append(
            head.predict_masks(backbone.norm(tokens), grid, prefix))
        return predictions
