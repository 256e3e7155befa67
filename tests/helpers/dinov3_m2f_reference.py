"""An independent plain-torch reference of Meta's released DINOv3
Mask2Former (hub ``dinov3_vit7b16_ms``, head file
``dinov3_vit7b16_ade20k_m2f_head-*.pth``), written from Meta's definitions
(facebookresearch/dinov3 at 6876159, ``dinov3/eval/segmentation/``), with
nothing from the project, mmcv, mmdet or mmseg, so that a test comparing the
package with it checks the package against Meta's formulas.

The pieces, one class per Meta module and named like Meta's so that the head
file loads with ``strict=True``:

- ``segmentation_model.0``: ``DINOv3_Adapter`` without its backbone (the
  backbone is the plain reference of ``dinov3_reference.reference_tokens``
  on a state dict in Meta's layout): spatial prior module, four
  extractor-only interactions (the last with two extra extractors), the
  stride-4 up-convolution and four batch norms.
- ``segmentation_model.1``: ``Mask2FormerHead``: ``MSDeformAttnPixelDecoder``
  (3-level deformable encoder + one FPN level) and
  ``MultiScaleMaskedTransformerDecoder``.

Multi-scale deformable attention is computed with ``F.grid_sample`` from the
formula (Deformable DETR eq. 3: bilinear samples at reference point + offset
/ level size, weighted by a softmax over levels x points, per head);
:func:`ms_deform_attn_bruteforce` is the same formula as explicit loops, for
the tests. Eval mode only: batch norms use their running statistics and
there is no dropout or drop path. Images must have sides divisible by 32
(Meta's adapter splits its token sequence assuming it).

Checked once (2026-12-01, a scratch script, not part of the suite) against
Meta's own modules built from the mirrored repo on CPU in float32 (ViT width
64, 8 blocks, hidden 64, Meta's 16 heads / FFN 4096 / 100 queries / 9 + 6
layers; 1 x 64 x 96 and 2 x 96 x 64 images): the manifest equals their
state_dict (also for the 7B: 479 tensors, 927,454,817 numbers), adapter
features within 8e-6, logits 2e-6, mask logits 1.3e-5, per-window class
scores 7e-5 (argmax identical).
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from helpers.dinov3_reference import reference_tokens
from torch import Tensor, nn

Shape = Tuple[int, ...]

# torch.nn defaults Meta's modules rely on: SyncBatchNorm / GroupNorm /
# nn.LayerNorm eps 1e-5; the adapter's extractors pass LayerNorm eps 1e-6.
BN_EPS = 1e-5
GN_EPS = 1e-5
GN_GROUPS = 32
LN_EPS = 1e-5
ADAPTER_LN_EPS = 1e-6
NUM_LEVELS = 3  # the pixel decoder and predictor always use 3 scales


def meta_adapter_indices(depth: int) -> list:
    """``_get_backbone_out_indices`` with FOUR_EVEN_INTERVALS: the paper's
    [4, 11, 17, 23] for 24 blocks, else the last block of every quarter."""
    if depth == 24:
        return [4, 11, 17, 23]
    if depth < 4:
        raise ValueError(f'Meta adapter needs a backbone of >= 4 blocks, '
                         f'got depth={depth}')
    return [i * (depth // 4) - 1 for i in range(1, 5)]


# ---------------------------------------------------------------------------
# Multi-scale deformable attention (utils/ms_deform_attn.py)


def ms_deform_attn_grid_sample(value: Tensor, shapes: Sequence[Tuple[int,
                                                                     int]],
                               locations: Tensor, weights: Tensor) -> Tensor:
    """sum_{l,p} w[n,q,m,l,p] * bilinear(V_l[n,:,m], loc[n,q,m,l,p]).

    value (N, S, M, D) with S = sum of h_l * w_l (row-major per level);
    locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1] of each level (0 = the
    left/top edge, 1 = the right/bottom edge); weights (N, Lq, M, L, P).
    Bilinear with zeros outside, pixel centres at (i + 0.5) / size, i.e.
    grid_sample with align_corners=False on 2 * loc - 1. Returns
    (N, Lq, M * D).
    """
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    out = value.new_zeros(n, m, d, lq)
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w]  # N, hw, M, D
        start += h * w
        v = v.permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        grid = 2 * locations[:, :, :, lvl] - 1  # N, Lq, M, P, 2
        grid = grid.permute(0, 2, 1, 3, 4).reshape(n * m, lq, points, 2)
        sampled = F.grid_sample(
            v,
            grid,
            mode='bilinear',
            padding_mode='zeros',
            align_corners=False).view(n, m, d, lq, points)
        wl = weights[:, :, :, lvl].permute(0, 2, 1, 3)  # N, M, Lq, P
        out = out + (sampled * wl[:, :, None]).sum(-1)
    if start != value.shape[1]:
        raise ValueError(f'value has {value.shape[1]} positions, the level '
                         f'shapes {list(shapes)} give {start}')
    return out.permute(0, 3, 1, 2).reshape(n, lq, m * d)


def ms_deform_attn_bruteforce(value: Tensor, shapes: Sequence[Tuple[int, int]],
                              locations: Tensor, weights: Tensor) -> Tensor:
    """The same formula as explicit loops over every sample: pixel
    coordinates x = loc_x * w - 0.5, y = loc_y * h - 0.5, the four
    neighbours weighted by (1 - |dx|)(1 - |dy|), neighbours outside the map
    contributing zero. Slow; for tests on tiny cases."""
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(points):
                        x = float(locations[b, q, head, lvl, p, 0]) * w - 0.5
                        y = float(locations[b, q, head, lvl, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(d, dtype=value.dtype)
                        for yy in (y0, y0 + 1):
                            for xx in (x0, x0 + 1):
                                if 0 <= yy < h and 0 <= xx < w:
                                    c = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                    idx = starts[lvl] + yy * w + xx
                                    sample += c * value[b, idx, head]
                        out[b, q, head] += weights[b, q, head, lvl, p] * sample
    return out.reshape(n, lq, m * d)


class MSDeformAttn(nn.Module):
    """Meta's ``MSDeformAttn`` (2-d reference points): value projection to
    ``int(d_model * ratio)`` split into heads, offsets divided by each value
    level's (w, h), softmax over levels x points, output projection."""

    def __init__(self,
                 d_model: int,
                 n_levels: int,
                 n_heads: int,
                 n_points: int,
                 ratio: float = 1.0):
        super().__init__()
        if d_model % n_heads or int(d_model * ratio) % n_heads:
            raise ValueError(f'MSDeformAttn: d_model {d_model} (value '
                             f'{int(d_model * ratio)}) not divisible by '
                             f'{n_heads} heads')
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model,
                                          n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model,
                                           n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, int(d_model * ratio))
        self.output_proj = nn.Linear(int(d_model * ratio), d_model)

    def forward(self, query: Tensor, reference_points: Tensor,
                value_input: Tensor, shapes: Sequence[Tuple[int,
                                                            int]]) -> Tensor:
        """query (N, Lq, C); reference_points (N or 1, Lq, n_levels, 2) as
        (x, y) in [0, 1]; value_input (N, S, C) on ``shapes``."""
        n, lq, _ = query.shape
        m, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_input).view(n, value_input.shape[1], m,
                                                  -1)
        offsets = self.sampling_offsets(query).view(n, lq, m, levels, points,
                                                    2)
        weights = self.attention_weights(query).view(n, lq, m, levels * points)
        weights = weights.softmax(-1).view(n, lq, m, levels, points)
        # Offsets are in pixels of the value level: normalise by (w, h).
        size_xy = torch.tensor([[w, h] for h, w in shapes],
                               dtype=query.dtype,
                               device=query.device)
        locations = (
            reference_points[:, :, None, :, None, :] +
            offsets / size_xy[None, None, None, :, None, :])
        return self.output_proj(
            ms_deform_attn_grid_sample(value, shapes, locations, weights))


def pixel_centres(shapes: Sequence[Tuple[int, int]]) -> Tensor:
    """(1, sum h*w, 2): ((j + 0.5) / w, (i + 0.5) / h) of every pixel of
    every level, row-major (Meta's get_reference_points, valid ratios 1)."""
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        points.append(torch.stack([grid_x.flatten(), grid_y.flatten()], -1))
    return torch.cat(points)[None]


# ---------------------------------------------------------------------------
# Normalisations, attention, positional encoding


class EvalBatchNorm(nn.Module):
    """(Sync)BatchNorm2d in eval mode: (x - running_mean) /
    sqrt(running_var + eps) * weight + bias. Holds SyncBatchNorm's keys."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer('running_mean', torch.zeros(channels))
        self.register_buffer('running_var', torch.ones(channels))
        self.register_buffer('num_batches_tracked',
                             torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:

        def c(t):
            return t[None, :, None, None]

        return (x - c(self.running_mean)) / torch.sqrt(
            c(self.running_var) + BN_EPS) * c(self.weight) + c(self.bias)


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameters (packed q, k, v projection), with
    the attention written out: softmax(q k^T / sqrt(d_head)) v, where a
    True in the boolean mask forbids attending."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self,
                q: Tensor,
                k: Tensor,
                v: Tensor,
                mask: Tensor = None) -> Tensor:
        """Batch-first (B, L, C); mask (B, Lq, Lk), the same for every
        head."""
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        b, lq, dim = q.shape
        heads, hd = self.num_heads, dim // self.num_heads

        def split(t):
            return t.view(b, -1, heads, hd).transpose(1, 2)

        q, k, v = split(F.linear(q, wq,
                                 bq)), split(F.linear(k, wk, bk)), split(
                                     F.linear(v, wv, bv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None], float('-inf'))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, dim)
        return self.out_proj(out)


def sine_position_encoding(batch: int, height: int, width: int,
                           channels: int) -> Tensor:
    """PositionEmbeddingSine(channels // 2, normalize=True): with F =
    channels / 2 features per axis, row y = (i + 1) / (h + 1e-6) * 2 pi,
    column x likewise; feature 2k = sin(t / 10000^(2k / F)), 2k + 1 =
    cos(t / 10000^(2k / F)); the y features first, then x. (B, C, h, w)."""
    feats = channels // 2
    y = torch.arange(1, height + 1, dtype=torch.float32)
    x = torch.arange(1, width + 1, dtype=torch.float32)
    y = y / (height + 1e-6) * 2 * math.pi
    x = x / (width + 1e-6) * 2 * math.pi
    k = torch.arange(feats // 2, dtype=torch.float32)
    freq = 10000.0**(2 * k / feats)

    def encode(t):  # (n,) -> (n, F): sin, cos interleaved
        a = t[:, None] / freq
        return torch.stack([a.sin(), a.cos()], -1).flatten(1)

    ey = encode(y)[:, None, :].expand(height, width, feats)
    ex = encode(x)[None, :, :].expand(height, width, feats)
    pos = torch.cat([ey, ex], -1).permute(2, 0, 1)
    return pos[None].expand(batch, -1, -1, -1)


class ConvNorm(nn.Conv2d):
    """Detectron2's Conv2d wrapper: convolution, then ``.norm``, then the
    activation (keys ``weight``, ``norm.weight``, ``norm.bias``)."""

    def __init__(self, *args, norm: nn.Module, relu: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


# ---------------------------------------------------------------------------
# DINOv3_Adapter (backbone/dinov3_adapter.py), without the backbone


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution applied to each of the three levels of
    the adapter's token sequence (16n tokens at 2h x 2w, 4n at h x w, n at
    h/2 x w/2, one set of weights)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        sizes = [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]
        out, start = [], 0
        for hh, ww in sizes:
            part = x[:,
                     start:start + hh * ww].transpose(1,
                                                      2).reshape(b, c, hh, ww)
            start += hh * ww
            out.append(self.dwconv(part).flatten(2).transpose(1, 2))
        return torch.cat(out, 1)


class ConvFFN(nn.Module):
    """fc2(GELU(dwconv(fc1(x))))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Extractor(nn.Module):
    """c += attn(query_norm(c), feat_norm(vit)); c += ffn(ffn_norm(c))."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float,
                 cffn_ratio: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=ADAPTER_LN_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=ADAPTER_LN_EPS)
        self.attn = MSDeformAttn(dim, 1, heads, points, ratio)
        self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
        self.ffn_norm = nn.LayerNorm(dim, eps=ADAPTER_LN_EPS)

    def forward(self, c: Tensor, reference_points: Tensor, feat: Tensor,
                feat_shape: Tuple[int, int], h: int, w: int) -> Tensor:
        c = c + self.attn(
            self.query_norm(c), reference_points, self.feat_norm(feat),
            [feat_shape])
        return c + self.ffn(self.ffn_norm(c), h, w)


class InteractionBlockWithCls(nn.Module):
    """Extractor only (Meta's DINOv3 adapter has no injector): the ViT
    tokens are read, never changed."""

    def __init__(self, dim: int, heads: int, points: int, ratio: float,
                 cffn_ratio: float, extra_extractor: bool):
        super().__init__()

        def make():
            return Extractor(dim, heads, points, ratio, cffn_ratio)

        self.extractor = make()
        self.extra_extractors = nn.Sequential(
            make(), make()) if extra_extractor else None

    def forward(self, vit: Tensor, c: Tensor, reference: Tensor,
                grid: Tuple[int, int], h: int, w: int) -> Tensor:
        c = self.extractor(c, reference, vit, grid, h, w)
        for extractor in self.extra_extractors or []:
            c = extractor(c, reference, vit, grid, h, w)
        return c


class SpatialPriorModule(nn.Module):
    """Convolution stem at strides 4, 8, 16, 32 (conv-BN-ReLU, max-pool),
    each level projected to the ViT width by a 1x1 convolution."""

    def __init__(self, inplanes: int, dim: int):
        super().__init__()

        def cbr(cin, cout, stride):
            return [
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                EvalBatchNorm(cout),
                nn.ReLU()
            ]

        self.stem = nn.Sequential(*cbr(3, inplanes, 2),
                                  *cbr(inplanes, inplanes, 1),
                                  *cbr(inplanes, inplanes, 1),
                                  nn.MaxPool2d(3, 2, 1))
        self.conv2 = nn.Sequential(*cbr(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*cbr(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*cbr(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, dim, 1)

    def forward(self, x: Tensor) -> List[Tensor]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return [self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)]


class DINOv3Adapter(nn.Module):
    """Meta's ``DINOv3_Adapter`` forward, given the ViT's patch tokens at
    the interaction layers (normed by the backbone's final norm)."""

    def __init__(self, dim: int, conv_inplane: int, deform_heads: int,
                 num_points: int, deform_ratio: float, cffn_ratio: float):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(conv_inplane, dim)
        self.interactions = nn.Sequential(*[
            InteractionBlockWithCls(dim, deform_heads, num_points,
                                    deform_ratio, cffn_ratio, i == 3)
            for i in range(4)
        ])
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = EvalBatchNorm(dim)
        self.norm2 = EvalBatchNorm(dim)
        self.norm3 = EvalBatchNorm(dim)
        self.norm4 = EvalBatchNorm(dim)

    def forward(self, img: Tensor, vit_tokens: List[Tensor],
                patch_size: int) -> Dict[str, Tensor]:
        b, _, height, width = img.shape
        dim = self.level_embed.shape[1]
        h, w = height // 16, width // 16  # H_c, W_c: the stride-16 grid
        grid = (height // patch_size, width // patch_size)  # the ViT's
        c1, c2, c3, c4 = self.spm(img)
        sizes = [tuple(t.shape[-2:]) for t in (c2, c3, c4)]
        if sizes != [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]:
            raise ValueError(
                f'Meta adapter: image sides must be divisible by 32, got '
                f'{height} x {width} (prior levels {sizes})')
        c = torch.cat([
            t.flatten(2).transpose(1, 2) + self.level_embed[i]
            for i, t in enumerate((c2, c3, c4))
        ], 1)
        # Each query of the three prior levels samples the ViT grid around
        # its own pixel centre (deform_inputs2).
        reference = pixel_centres(sizes)[:, :, None]
        for block, vit in zip(self.interactions, vit_tokens):
            c = block(vit, c, reference, grid, h, w)
        n2, n3 = 4 * h * w, h * w
        c2 = c[:, :n2].transpose(1, 2).reshape(b, dim, 2 * h, 2 * w)
        c3 = c[:, n2:n2 + n3].transpose(1, 2).reshape(b, dim, h, w)
        c4 = c[:, n2 + n3:].transpose(1, 2).reshape(b, dim, h // 2, w // 2)
        c1 = self.up(c2) + c1
        # add_vit_feature: the four ViT maps, bilinearly resized to the
        # strides 4, 8, 16, 32 (align_corners=False, no antialias).
        maps = [t.transpose(1, 2).reshape(b, dim, *grid) for t in vit_tokens]
        out = []
        for i, (cx, vit) in enumerate(zip((c1, c2, c3, c4), maps)):
            vit = F.interpolate(
                vit, size=cx.shape[-2:], mode='bilinear', align_corners=False)
            out.append(getattr(self, f'norm{i + 1}')(cx + vit))
        return {str(i + 1): t for i, t in enumerate(out)}


# ---------------------------------------------------------------------------
# Mask2FormerHead: MSDeformAttnPixelDecoder (heads/pixel_decoder.py)


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm: src = norm1(src + attn(src + pos, src)); src =
    norm2(src + linear2(relu(linear1(src))))."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, NUM_LEVELS, heads, points)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, src, pos, reference, shapes):
        src = self.norm1(src +
                         self.self_attn(src + pos, reference, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnTransformerEncoder(nn.Module):

    def __init__(self, layers: int, *args):
        super().__init__()
        self.layers = nn.ModuleList(
            MSDeformAttnTransformerEncoderLayer(*args) for _ in range(layers))


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds sine positions + a learnt level encoding,
    runs the encoder with every query's reference point at its own pixel
    centre, the same normalised point on every level."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.encoder = MSDeformAttnTransformerEncoder(layers, dim, ffn_dim,
                                                      heads)
        self.level_encoding = nn.Parameter(torch.zeros(NUM_LEVELS, dim))

    def forward(self, srcs: List[Tensor]) -> List[Tensor]:
        b, dim = srcs[0].shape[:2]
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([
            sine_position_encoding(b, h, w, dim).flatten(2).transpose(1, 2) +
            self.level_encoding[lvl] for lvl, (h, w) in enumerate(shapes)
        ], 1)
        reference = pixel_centres(shapes)[:, :,
                                          None].expand(-1, -1, len(shapes), -1)
        for layer in self.encoder.layers:
            src = layer(src, pos, reference, shapes)
        out, start = [], 0
        for h, w in shapes:
            out.append(src[:, start:start + h * w].transpose(1, 2).reshape(
                b, dim, h, w))
            start += h * w
        return out


class MSDeformAttnPixelDecoder(nn.Module):
    """Features "4", "3", "2" (strides 32, 16, 8) through 1x1 conv + GN and
    the deformable encoder; then one FPN level on "1" (stride 4): GN(1x1
    conv, no bias) + bilinear upsampling of the stride-8 output, then
    ReLU(GN(3x3 conv, no bias)); mask features = 1x1 conv of that."""

    def __init__(self, embed_dim: int, dim: int, heads: int, ffn_dim: int,
                 enc_layers: int):
        super().__init__()
        self.input_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(embed_dim, dim, 1),
                nn.GroupNorm(GN_GROUPS, dim, eps=GN_EPS))
            for _ in range(NUM_LEVELS))
        self.encoder = MSDeformAttnTransformerEncoderOnly(
            dim, heads, ffn_dim, enc_layers)
        self.mask_feature = nn.Conv2d(dim, dim, 1)
        self.lateral_convs = nn.ModuleList([
            ConvNorm(
                embed_dim,
                dim,
                1,
                bias=False,
                norm=nn.GroupNorm(GN_GROUPS, dim, eps=GN_EPS),
                relu=False)
        ])
        self.output_convs = nn.ModuleList([
            ConvNorm(
                dim,
                dim,
                3,
                padding=1,
                bias=False,
                norm=nn.GroupNorm(GN_GROUPS, dim, eps=GN_EPS),
                relu=True)
        ])

    def forward(self, features: Dict[str, Tensor]):
        srcs = [
            conv(features[key])
            for conv, key in zip(self.input_convs, ('4', '3', '2'))
        ]
        multi_scale = self.encoder(srcs)
        lateral = self.lateral_convs[0](features['1'])
        y = lateral + F.interpolate(
            multi_scale[-1],
            size=lateral.shape[-2:],
            mode='bilinear',
            align_corners=False)
        y = self.output_convs[0](y)
        return self.mask_feature(y), multi_scale


# ---------------------------------------------------------------------------
# Mask2FormerHead: MultiScaleMaskedTransformerDecoder


class SelfAttentionLayer(nn.Module):

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x, query_pos):
        q = x + query_pos
        return self.norm(x + self.self_attn(q, q, x))


class CrossAttentionLayer(nn.Module):

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.multihead_attn = MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x, memory, mask, pos, query_pos):
        return self.norm(x + self.multihead_attn(x + query_pos, memory +
                                                 pos, memory, mask))


class FFNLayer(nn.Module):

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """Three linears, ReLU between them."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, out_dim)
        ])

    def forward(self, x):
        x = F.relu(self.layers[0](x))
        return self.layers[2](F.relu(self.layers[1](x)))


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Post-norm masked-attention decoder: per layer cross-attention (to
    level i % 3, masked where the previous prediction's sigmoid, resized to
    that level, is < 0.5, a fully masked query unmasked), self-attention,
    FFN; predictions after the learnt queries and after every layer. The
    input projections are identities (in_channels == hidden_dim)."""

    def __init__(self, dim: int, num_classes: int, num_queries: int,
                 heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, ffn_dim) for _ in range(layers))
        self.post_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(NUM_LEVELS, dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = MLP(dim, dim)

    def predict(self, x, mask_features, mask_size):
        x = self.post_norm(x)
        logits = self.class_embed(x)
        masks = torch.einsum('bqc,bchw->bqhw', self.mask_embed(x),
                             mask_features)
        small = F.interpolate(
            masks, size=mask_size, mode='bilinear', align_corners=False)
        attn_mask = small.sigmoid().flatten(2) < 0.5
        return logits, masks, attn_mask

    def forward(self, multi_scale: List[Tensor], mask_features: Tensor):
        b, dim = multi_scale[0].shape[:2]
        sizes = [tuple(t.shape[-2:]) for t in multi_scale]
        pos = [
            sine_position_encoding(b, h, w, dim).flatten(2).transpose(1, 2)
            for h, w in sizes
        ]
        src = [
            t.flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            for i, t in enumerate(multi_scale)
        ]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        x = self.query_feat.weight[None].expand(b, -1, -1)
        logits, masks, attn_mask = self.predict(x, mask_features, sizes[0])
        for i, (cross, self_attn, ffn) in enumerate(
                zip(self.transformer_cross_attention_layers,
                    self.transformer_self_attention_layers,
                    self.transformer_ffn_layers)):
            lvl = i % NUM_LEVELS
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            x = cross(x, src[lvl], attn_mask, pos[lvl], query_pos)
            x = self_attn(x, query_pos)
            x = ffn(x)
            logits, masks, attn_mask = self.predict(
                x, mask_features, sizes[(i + 1) % NUM_LEVELS])
        return logits, masks


class Mask2FormerHead(nn.Module):

    def __init__(self, embed_dim: int, hidden_dim: int, num_classes: int,
                 num_queries: int, num_heads: int, ffn_dim: int,
                 dec_layers: int, enc_layers: int):
        super().__init__()
        self.pixel_decoder = MSDeformAttnPixelDecoder(embed_dim, hidden_dim,
                                                      num_heads, ffn_dim,
                                                      enc_layers)
        self.predictor = MultiScaleMaskedTransformerDecoder(
            hidden_dim, num_classes, num_queries, num_heads, ffn_dim,
            dec_layers)

    def forward(self, features: Dict[str, Tensor]):
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


class _HeadFile(nn.Module):
    """The modules whose state is Meta's head file (``segmentation_model``
    = [adapter without backbone, Mask2Former head])."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_classes: int,
                 num_queries: int, num_heads: int, ffn_dim: int,
                 conv_inplane: int, deform_heads: int, num_points: int,
                 deform_ratio: float, cffn_ratio: float, dec_layers: int,
                 enc_layers: int):
        super().__init__()
        if hidden_dim % GN_GROUPS:
            raise ValueError(f'hidden_dim {hidden_dim} must be divisible by '
                             f'the pixel decoder\'s {GN_GROUPS} GN groups')
        self.segmentation_model = nn.ModuleList([
            DINOv3Adapter(embed_dim, conv_inplane, deform_heads, num_points,
                          deform_ratio, cffn_ratio),
            Mask2FormerHead(embed_dim, hidden_dim, num_classes, num_queries,
                            num_heads, ffn_dim, dec_layers, enc_layers)
        ])


# ---------------------------------------------------------------------------
# The file: manifest and fabrication


def meta_m2f_head_manifest(embed_dim: int,
                           depth: int,
                           hidden_dim: int = 2048,
                           num_classes: int = 150,
                           num_queries: int = 100,
                           num_heads: int = 16,
                           ffn_dim: int = 4096,
                           conv_inplane: int = 64,
                           deform_heads: int = 16,
                           num_points: int = 4,
                           deform_ratio: float = 0.5,
                           cffn_ratio: float = 0.25,
                           dec_layers: int = 9,
                           enc_layers: int = 6) -> Dict[str, Shape]:
    """Every tensor of Meta's head file with its shape (the defaults are
    Meta's: hidden 2048, 150 classes, 100 queries, 16 heads and FFN 4096 in
    both the pixel decoder and the predictor, 9 decoder and 6 encoder
    layers); built on the meta device, nothing allocated. ``depth`` only
    checks that the backbone has the 4 interaction layers: the file's
    shapes do not depend on it."""
    meta_adapter_indices(depth)
    with torch.device('meta'):
        model = _HeadFile(embed_dim, hidden_dim, num_classes, num_queries,
                          num_heads, ffn_dim, conv_inplane, deform_heads,
                          num_points, deform_ratio, cffn_ratio, dec_layers,
                          enc_layers)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _owner(modules: Dict[str, nn.Module], key: str):
    path, leaf = key.rsplit('.', 1)
    return modules[path], leaf


def fabricate_meta_m2f_head(embed_dim: int,
                            depth: int,
                            hidden_dim: int,
                            num_classes: int,
                            num_queries: int,
                            num_heads: int,
                            ffn_dim: int,
                            generator: torch.Generator,
                            conv_inplane: int = 64,
                            deform_heads: int = 16,
                            num_points: int = 4,
                            deform_ratio: float = 0.5,
                            cffn_ratio: float = 0.25,
                            dec_layers: int = 9,
                            enc_layers: int = 6) -> Dict[str, Tensor]:
    """Meta's head file as a state dict of random float32 tensors: weights
    N(0, 1 / fan_in), biases N(0, 0.05^2), norms' scales 1 + N(0, 0.1^2),
    batch-norm running means N(0, 0.1^2) and variances U(0.5, 1.5) (and a
    count in num_batches_tracked), embeddings and level encodings
    N(0, 0.5^2); deformable sampling offsets biased to Meta's ring of points
    at 1..P pixels (plus noise) so that samples fall between pixels and
    some outside the map."""
    meta_adapter_indices(depth)
    with torch.device('meta'):
        model = _HeadFile(embed_dim, hidden_dim, num_classes, num_queries,
                          num_heads, ffn_dim, conv_inplane, deform_heads,
                          num_points, deform_ratio, cffn_ratio, dec_layers,
                          enc_layers)
    modules = dict(model.named_modules())
    g = generator

    def randn(*shape):
        return torch.randn(shape, generator=g)

    state = {}
    for key, meta_tensor in model.state_dict().items():
        shape = tuple(meta_tensor.shape)
        owner, leaf = _owner(modules, key)
        if isinstance(owner, EvalBatchNorm):
            value = {
                'weight':
                lambda: 1 + 0.1 * randn(*shape),
                'bias':
                lambda: 0.1 * randn(*shape),
                'running_mean':
                lambda: 0.1 * randn(*shape),
                'running_var':
                lambda: 0.5 + torch.rand(shape, generator=g),
                'num_batches_tracked':
                lambda: torch.tensor(12345, dtype=torch.long),
            }[leaf]()
        elif isinstance(owner, (nn.LayerNorm, nn.GroupNorm)):
            value = (1 if leaf == 'weight' else 0) + 0.1 * randn(*shape)
        elif isinstance(owner, nn.Embedding) or leaf in ('level_embed',
                                                         'level_encoding'):
            value = 0.5 * randn(*shape)
        elif key.endswith('sampling_offsets.bias'):
            attn = modules[key.rsplit('.', 2)[0]]
            value = _ring_offsets(attn.n_heads, attn.n_levels,
                                  attn.n_points) + 0.3 * randn(*shape)
        elif key.endswith('sampling_offsets.weight'):
            value = 0.5 * randn(*shape) / math.sqrt(shape[1])
        elif leaf.endswith('bias'):
            value = 0.05 * randn(*shape)
        elif isinstance(owner, nn.ConvTranspose2d):
            value = randn(*shape) / math.sqrt(shape[0])
        else:  # linear / conv / packed attention weights
            value = randn(*shape) / math.sqrt(math.prod(shape[1:]))
        state[key] = value
    return state


def _ring_offsets(heads: int, levels: int, points: int) -> Tensor:
    """Meta's MSDeformAttn initial offsets: head m looks along the angle
    2 pi m / M (scaled so the larger coordinate is 1), point p at (p + 1)
    times that, the same on every level; (heads, levels, points, 2)
    flattened."""
    theta = torch.arange(heads, dtype=torch.float32) * (2 * math.pi / heads)
    direction = torch.stack([theta.cos(), theta.sin()], -1)
    direction = direction / direction.abs().max(-1, keepdim=True)[0]
    scale = torch.arange(1, points + 1, dtype=torch.float32)
    ring = direction[:, None, None, :] * scale[None, None, :, None]
    return ring.expand(heads, levels, points, 2).flatten()


# ---------------------------------------------------------------------------
# The whole model


class MetaDinoV3M2FReference(nn.Module):
    """Meta's DINOv3 ViT + DINOv3_Adapter + Mask2Former head, eval mode.

    ``backbone_state_dict``: Meta's backbone file (run by
    ``dinov3_reference.reference_tokens``); ``arch_settings``: a dict with
    its ``embed_dim``, ``depth``, ``num_heads`` (other keys ignored);
    ``head_state_dict``: Meta's head file, loaded with strict=True.
    """

    def __init__(self,
                 backbone_state_dict: Dict[str, Tensor],
                 arch_settings: dict,
                 head_state_dict: Dict[str, Tensor],
                 hidden_dim: int,
                 num_queries: int,
                 num_heads: int,
                 ffn_dim: int,
                 num_classes: int,
                 conv_inplane: int = 64,
                 deform_heads: int = 16,
                 num_points: int = 4,
                 deform_ratio: float = 0.5,
                 cffn_ratio: float = 0.25,
                 dec_layers: int = 9,
                 enc_layers: int = 6):
        super().__init__()
        missing = {'embed_dim', 'depth', 'num_heads'} - set(arch_settings)
        if missing:
            raise KeyError(f'arch_settings lacks {sorted(missing)}')
        self.embed_dim = arch_settings['embed_dim']
        self.backbone_heads = arch_settings['num_heads']
        self.interaction_indexes = meta_adapter_indices(arch_settings['depth'])
        self.backbone = dict(backbone_state_dict)  # not a module: not saved
        patch = self.backbone['patch_embed.proj.weight']
        if tuple(patch.shape[:2]) != (self.embed_dim, 3):
            raise ValueError(
                f'backbone patch_embed.proj.weight {tuple(patch.shape)} does '
                f'not match embed_dim {self.embed_dim}')
        self.patch_size = patch.shape[-1]
        self.prefix = 1 + self.backbone['storage_tokens'].shape[1]
        self.head = _HeadFile(self.embed_dim, hidden_dim, num_classes,
                              num_queries, num_heads, ffn_dim, conv_inplane,
                              deform_heads, num_points, deform_ratio,
                              cffn_ratio, dec_layers, enc_layers)
        self.head.load_state_dict(head_state_dict, strict=True)
        self.eval()

    def vit_tokens(self, img: Tensor) -> List[Tensor]:
        """Patch tokens (B, h*w, D) of the interaction layers, after the
        backbone's final norm (get_intermediate_layers' norm=True), class
        and storage tokens dropped."""
        tokens = reference_tokens(self.backbone, img, self.backbone_heads,
                                  self.interaction_indexes)
        return [t[:, self.prefix:] for t in tokens]

    @torch.no_grad()
    def adapter_features(self, img: Tensor) -> Dict[str, Tensor]:
        """Meta's adapter output {"1": stride 4, ..., "4": stride 32}."""
        adapter = self.head.segmentation_model[0]
        return adapter(img, self.vit_tokens(img), self.patch_size)

    @torch.no_grad()
    def forward(self, img: Tensor) -> Tuple[Tensor, Tensor]:
        """pred_logits (B, Q, C + 1) and pred_masks (B, Q, H / 4, W / 4) of
        the last decoder layer."""
        return self.head.segmentation_model[1](self.adapter_features(img))

    @torch.no_grad()
    def semantic(self, img: Tensor, size: Tuple[int, int]) -> Tensor:
        """Meta's per-window combination (inference.py): mask logits
        resized to ``size`` first (bilinear, align_corners=False), then
        sum_q softmax(class logits)[:C] * sigmoid(mask). (B, C, *size)."""
        logits, masks = self(img)
        masks = F.interpolate(
            masks, size=tuple(size), mode='bilinear', align_corners=False)
        probs = logits.softmax(-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', probs, masks.sigmoid())


def fabricate_meta_backbone(embed_dim: int,
                            depth: int,
                            num_heads: int,
                            generator: torch.Generator,
                            ffn_ratio: int = 4) -> Dict[str, Tensor]:
    """A small DINOv3 ViT state dict in Meta's layout (MLP FFN, qkv bias
    with its key mask, 4 storage tokens) at any width, for tests that need a
    backbone narrower than the hub archs of ``dinov3_meta``."""
    g = generator
    d, hidden = embed_dim, ffn_ratio * embed_dim

    def randn(*shape, scale=None):
        t = torch.randn(shape, generator=g)
        return t * (
            scale if scale is not None else 1 /
            math.sqrt(math.prod(shape[1:])))

    quarter = embed_dim // num_heads // 4
    state = {
        'cls_token':
        randn(1, 1, d, scale=0.5),
        'storage_tokens':
        randn(1, 4, d, scale=0.5),
        'mask_token':
        randn(1, d, scale=0.5),
        'patch_embed.proj.weight':
        randn(d, 3, 16, 16),
        'patch_embed.proj.bias':
        randn(d, scale=0.1),
        'rope_embed.periods':
        100.0**(2 * torch.arange(quarter, dtype=torch.float32) /
                (2 * quarter)),
        'norm.weight':
        1 + randn(d, scale=0.1),
        'norm.bias':
        randn(d, scale=0.1),
    }
    for i in range(depth):
        p = f'blocks.{i}.'
        mask = torch.ones(3 * d)
        mask[d:2 * d] = 0
        state.update({
            p + 'norm1.weight': 1 + randn(d, scale=0.1),
            p + 'norm1.bias': randn(d, scale=0.1),
            p + 'attn.qkv.weight': randn(3 * d, d),
            p + 'attn.qkv.bias': randn(3 * d, scale=0.1),
            p + 'attn.qkv.bias_mask': mask,
            p + 'attn.proj.weight': randn(d, d),
            p + 'attn.proj.bias': randn(d, scale=0.1),
            p + 'ls1.gamma': 0.3 + randn(d, scale=0.1),
            p + 'norm2.weight': 1 + randn(d, scale=0.1),
            p + 'norm2.bias': randn(d, scale=0.1),
            p + 'mlp.fc1.weight': randn(hidden, d),
            p + 'mlp.fc1.bias': randn(hidden, scale=0.1),
            p + 'mlp.fc2.weight': randn(d, hidden),
            p + 'mlp.fc2.bias': randn(d, scale=0.1),
            p + 'ls2.gamma': 0.3 + randn(d, scale=0.1),
        })
    return state
