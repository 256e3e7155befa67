"""Multi-scale deformable attention with its level shapes as Python
integers, for the export of a fixed window.

mmcv's ``MultiScaleDeformableAttention.forward`` and mmdet's
``MSDeformAttnPixelDecoder.forward`` carry the (h, w) of each feature level
as an int64 tensor (``torch._shape_as_tensor``), and read its values back
to split, reshape and assert: torch.export cannot trace that (measured with
torch 2.13: "data is not allocated" at ``torch._shape_as_tensor`` in the
pixel decoder, a data-dependent guard at mmcv's
``assert (spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum() ==
num_value``). For a fixed window the shapes are constants. While
exporting, :func:`static_level_shapes` gives both classes forwards that
compute the same operations with the shapes as integers (recorded, for
the attention, in an eager run first); the kernel is mmcv's PyTorch one
(``grid_sample``). The parity tests check the exported graph against the
unmodified modules.
"""
import contextlib
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops import multi_scale_deform_attn as mmcv_msda
from mmdet.models.layers import MSDeformAttnPixelDecoder
from torch import Tensor

Shapes = List[Tuple[int, int]]


def _is_traced(tensor: Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(tensor)


def _attention_forward(original, recorded: Dict):
    """MultiScaleDeformableAttention.forward: in the eager run records the
    level shapes per module and value length; while tracing, computes the
    same steps with them as integers."""

    def forward(self,
                query: Tensor,
                key=None,
                value=None,
                identity=None,
                query_pos=None,
                key_padding_mask=None,
                reference_points=None,
                spatial_shapes=None,
                level_start_index=None,
                **kwargs) -> Tensor:
        source = query if value is None else value
        length = source.shape[1 if self.batch_first else 0]
        key_ = (id(self), int(length))
        if not _is_traced(query):
            recorded[key_] = [tuple(map(int, hw)) for hw in spatial_shapes]
            return original(self, query, key, value, identity, query_pos,
                            key_padding_mask, reference_points, spatial_shapes,
                            level_start_index, **kwargs)
        shapes = recorded[key_]
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        batch, num_query = query.shape[:2]
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, value.shape[1], self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_query,
                                                    self.num_heads,
                                                    self.num_levels,
                                                    self.num_points, 2)
        weights = self.attention_weights(query).view(
            batch, num_query, self.num_heads,
            self.num_levels * self.num_points).softmax(-1).view(
                batch, num_query, self.num_heads, self.num_levels,
                self.num_points)
        if reference_points.shape[-1] == 2:
            # (x, y) offsets in units of each level's (w, h)
            normalizer = offsets.new_tensor([[w, h] for h, w in shapes])
            locations = (
                reference_points[:, :, None, :, None, :] +
                offsets / normalizer[None, None, None, :, None, :])
        else:  # boxes (cx, cy, w, h)
            locations = (
                reference_points[:, :, None, :, None, :2] +
                offsets / self.num_points *
                reference_points[:, :, None, :, None, 2:] * 0.5)
        output = mmcv_msda.multi_scale_deformable_attn_pytorch(
            value, shapes, locations, weights)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity

    return forward


def _pixel_decoder_forward(original):
    """MSDeformAttnPixelDecoder.forward with the level shapes taken from
    the (static) feature sizes as integers while tracing."""

    def forward(self, feats: List[Tensor]):
        if not _is_traced(feats[0]):
            return original(self, feats)
        batch = feats[0].shape[0]
        inputs, masks, positions, shapes, points = [], [], [], [], []
        for i in range(self.num_encoder_levels):
            level = self.num_input_levels - i - 1
            feat = feats[level]
            height, width = (int(side) for side in feat.shape[-2:])
            no_padding = feat.new_zeros((batch, height, width),
                                        dtype=torch.bool)
            position = (
                self.level_encoding.weight[i].view(1, -1, 1, 1) +
                self.postional_encoding(no_padding))
            grid = self.point_generator.single_level_grid_priors(
                (height, width), level, device=feat.device)
            stride = self.strides[level]
            grid = grid / grid.new_tensor([width * stride, height * stride])
            inputs.append(self.input_convs[i](feat).flatten(2).transpose(1, 2))
            positions.append(position.flatten(2).transpose(1, 2))
            masks.append(no_padding.flatten(1))
            shapes.append((height, width))
            points.append(grid)
        sizes = [h * w for h, w in shapes]
        spatial = torch.tensor(shapes, device=feats[0].device)
        starts = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))],
                              device=feats[0].device)
        reference = torch.cat(points)[None, :,
                                      None].repeat(batch, 1,
                                                   self.num_encoder_levels, 1)
        memory = self.encoder(
            query=torch.cat(inputs, 1),
            query_pos=torch.cat(positions, 1),
            key_padding_mask=torch.cat(masks, 1),
            spatial_shapes=spatial,
            reference_points=reference,
            level_start_index=starts,
            valid_ratios=reference.new_ones(
                (batch, self.num_encoder_levels, 2)))
        outs = [
            part.reshape(batch, -1, h, w) for part, (
                h,
                w) in zip(memory.transpose(1, 2).split(sizes, dim=-1), shapes)
        ]
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1,
                       -1):
            lateral = self.lateral_convs[i](feats[i])
            outs.append(self.output_convs[i](lateral + F.interpolate(
                outs[-1],
                size=lateral.shape[-2:],
                mode='bilinear',
                align_corners=False)))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]

    return forward


@contextlib.contextmanager
def static_level_shapes() -> Iterator[None]:
    """Both forwards replaced for the duration (see the module
    docstring)."""
    recorded: Dict = {}
    replaced = [(MultiScaleDeformableAttention,
                 _attention_forward(MultiScaleDeformableAttention.forward,
                                    recorded)),
                (MSDeformAttnPixelDecoder,
                 _pixel_decoder_forward(MSDeformAttnPixelDecoder.forward))]
    saved = [(cls, cls.forward) for cls, _ in replaced]
    try:
        for cls, forward in replaced:
            cls.forward = forward
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward
