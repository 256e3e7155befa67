"""Slide-window merging without the full-resolution canvas.

mmseg's slide inference resizes every window's logits to the window,
adds them into a canvas as large as the (scaled) image, divides by the
window count, removes the padding, un-flips and resizes to the original
image. Every one of those steps is linear and acts on rows and columns
separately (bilinear resizing is separable, and the window count of a grid
of windows is the product of a row count and a column count), so the whole
chain from one window's head output to the original image is
``rows @ logits @ cols.T`` for two small matrices per window, restricted
to the band of the image that the window touches. Matrix products beat
gathering the (at most four) taps per output row by 3-6x on CPU.

The matrices come from index arithmetic in float64; the result is the
stock one up to float rounding, on any device.

:func:`merge_slide_windows` is the loop around it (windows cut, batched,
merged) that both :class:`BatchedEncoderDecoder` and the ONNX segmentor
run, each with its own "logits of these windows" function.
"""
import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# (start, end) of a window along an axis, or an (h, w) size.
IntPair = Tuple[int, int]


def slide_window_spans(length: int,
                       crop: int,
                       stride: int,
                       rule: str = 'stride') -> List[Tuple[int, int]]:
    """[start, end) of every window along one axis.

    ``rule='stride'`` is mmseg's (a window every ``stride``, the last one
    shifted back to end at the border). ``rule='spread'`` is EoMT's
    evaluation (``window_imgs_semantic`` of tue-mps/eomt): ceil(length /
    crop) windows, the spare overlap split evenly between them, starts
    truncated to integers, ``stride`` unused. Along one axis
    ``rule='stride_square'`` is 'stride' (its square windows are chosen by
    :func:`slide_window_grid`). A window never exceeds the image.
    """
    if rule == 'spread':
        return _spread_window_spans(length, crop)
    if rule not in ('stride', 'stride_square'):
        raise ValueError(f"test_cfg.window_rule={rule!r}: expected 'stride' "
                         "(mmseg's), 'spread' (EoMT's) or 'stride_square' "
                         "(Meta's DINOv3)")
    count = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans


def slide_window_grid(height: int, width: int, crop_size: IntPair,
                      stride: IntPair,
                      rule: str) -> Tuple[List[IntPair], List[IntPair]]:
    """The row and column spans of an image's windows
    (:func:`slide_window_spans` on each axis). ``rule='stride_square'``
    (Meta's DINOv3 ``slide_inference``) needs both sides at once: an image
    smaller than the window on both sides gets square windows of its short
    side."""
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    if rule == 'stride_square' and crop_h > height and crop_w > width:
        crop_h = crop_w = min(height, width)
    return (slide_window_spans(height, crop_h, stride_h, rule),
            slide_window_spans(width, crop_w, stride_w, rule))


def _spread_window_spans(length: int, crop: int) -> List[Tuple[int, int]]:
    if length <= crop:
        return [(0, length)]
    count = math.ceil(length / crop)
    step = crop - (count * crop - length) / (count - 1)
    spans = [(int(index * step), int(index * step) + crop)
             for index in range(count)]
    # EoMT's float step can truncate the last start one short of
    # length - crop (crop 640 from length 4481 on; never for 512 crops),
    # which leaves the last column without a window: end there instead.
    spans[-1] = (length - crop, length)
    return spans


def linear_taps(size_in: int, size_out: int,
                align_corners: bool) -> Tuple[Tensor, Tensor]:
    """Source indices (size_out, 2) and weights (size_out, 2), float64, of
    1-D linear resizing as ``F.interpolate(..., mode='(bi)linear', size=)``
    computes them (source coordinate clamped at 0 without align_corners,
    the second tap clamped at the border)."""
    dst = torch.arange(size_out, dtype=torch.float64)
    if align_corners:
        scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        src = dst * scale
    else:
        src = ((dst + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    first = src.floor().long().clamp(max=size_in - 1)
    second = (first + 1).clamp(max=size_in - 1)
    frac = src - first
    return (torch.stack([first, second], 1), torch.stack([1 - frac, frac], 1))


# Output rows per block of the row product on CPU (see add_window).
ROW_BLOCK = 16


@dataclass
class AxisBand:
    """One window's map along one axis from its head output to the original
    image: output positions [start, stop) are ``matrix`` (stop - start,
    head size) times the head output. ``blocks`` cuts the band into runs of
    at most ``ROW_BLOCK`` output positions, each with the range of head
    positions it reads: (first, last) output, (first, last) head, relative
    to the band, ends exclusive."""
    start: int
    stop: int
    matrix: Tensor
    blocks: Tuple[Tuple[int, int, int, int], ...]


def _compose_axis(span: Tuple[int, int], head_size: int, canvas: int,
                  pad: Tuple[int, int], flip: bool, out_size: int,
                  counts: Tensor, align_corners: bool) -> Tensor:
    """Dense (out_size, head_size) float64 map of one window along one
    axis: resize to the window, place in the canvas, divide by the window
    count, crop the padding, flip, resize to the original size."""
    first, last = span
    window = last - first
    # Head output -> window (the decode head's resize), as a dense matrix.
    idx, w = linear_taps(head_size, window, align_corners)
    to_window = torch.zeros(window, head_size, dtype=torch.float64)
    to_window.scatter_add_(1, idx, w)
    to_window /= counts[first:last, None]
    # Original image <- image part of the canvas (the final resize).
    image = canvas - pad[0] - pad[1]
    idx, w = linear_taps(image, out_size, align_corners)
    if flip:
        idx = image - 1 - idx
    canvas_pos = idx + pad[0]
    inside = (canvas_pos >= first) & (canvas_pos < last)
    rows = to_window[(canvas_pos - first).clamp(0, window - 1)]
    return (rows * (w * inside)[..., None]).sum(1)


def _row_blocks(band: Tensor) -> Tuple[Tuple[int, int, int, int], ...]:
    blocks = []
    for first in range(0, len(band), ROW_BLOCK):
        last = min(first + ROW_BLOCK, len(band))
        used = (band[first:last] != 0).any(0).nonzero()
        if len(used):
            blocks.append((first, last, int(used[0]), int(used[-1]) + 1))
    return tuple(blocks)


def axis_bands(spans: Tuple[Tuple[int, int], ...], head_size: int, canvas: int,
               pad: Tuple[int,
                          int], flip: bool, out_size: int, align_corners: bool,
               device: torch.device) -> Tuple[AxisBand, ...]:
    """The :class:`AxisBand` of every window span of one axis, as float32
    matrices on ``device``. Images of one size (and the views of one scale)
    share them: see :func:`axis_band_cache`."""
    counts = torch.zeros(canvas, dtype=torch.float64)
    for first, last in spans:
        counts[first:last] += 1
    bands = []
    for span in spans:
        dense = _compose_axis(span, head_size, canvas, pad, flip, out_size,
                              counts, align_corners)
        used = (dense != 0).any(1).nonzero()
        # A window lying entirely in the padding maps to nothing.
        start, stop = (int(used[0]), int(used[-1]) + 1) if len(used) else (0,
                                                                           0)
        band = dense[start:stop]
        bands.append(
            AxisBand(start, stop, to_device(band.float(), device),
                     _row_blocks(band)))
    return tuple(bands)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A host tensor copied to ``device`` without waiting for it: torch
    synchronises the stream after a copy from pageable memory to a GPU,
    which in the window loop (an image's bands are made at its first
    window) would wait for the windows already queued; a copy from pinned
    memory is queued behind them instead."""
    device = torch.device(device)
    if device.type != 'cuda':
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def axis_band_cache(maxsize: int = 256) -> Callable[..., Tuple[AxisBand, ...]]:
    """:func:`axis_bands` with a cache of its own, for one model: its
    device tensors go with the model rather than outliving it in a
    process-wide cache."""
    return functools.lru_cache(maxsize=maxsize)(axis_bands)


def add_window(out: Tensor,
               x: Tensor,
               rows: AxisBand,
               cols: AxisBand,
               blockwise: Optional[bool] = None) -> None:
    """Add the (C, h, w) head logits of one window into its band of the
    (C, H, W) original-image logits ``out``: columns first (on the head's
    few rows), then rows. On CPU the row product runs block by block, each
    block reading only the head rows it needs and adding a cache-sized
    product: a band-sized product is a fresh allocation whose page faults
    cost more than the arithmetic (docs/benchmarks.md, CPU). A GPU takes
    the band in one product.
    ``blockwise`` (default: on CPU) picks the way, the same sums either
    way."""
    x_cols = x @ cols.matrix.to(x.dtype).T
    row_matrix = rows.matrix.to(x.dtype)
    # Each update slices ``out`` afresh, so that autograd (a test step run
    # with gradients enabled) sees views of the current tensor.
    if blockwise is None:
        blockwise = x.device.type == 'cpu'
    if not blockwise:
        out[:, rows.start:rows.stop,
            cols.start:cols.stop] += row_matrix @ x_cols
        return
    for first, last, head_first, head_last in rows.blocks:
        out[:, rows.start + first:rows.start + last, cols.start:cols.stop] += (
            row_matrix[first:last, head_first:head_last]
            @ x_cols[:, head_first:head_last])


# (network input, metainfo) of one image or test-time view
View = Tuple[Tensor, dict]
# logits of a (N, 3, h, w) batch of windows, given their metainfo
CropLogits = Callable[[Tensor, List[dict]], Tensor]


def view_bands(axis_bands: Callable[..., Tuple[AxisBand, ...]], view: View,
               grid: Tuple[List[Tuple[int, int]],
                           List[Tuple[int, int]]], head_size: Tuple[int, int],
               align_corners: bool) -> Tuple[Tuple[AxisBand, ...], ...]:
    """Row and column bands of every window of one view: through its
    padding (``img_padding_size`` or ``padding_size``, left, right, top,
    bottom) and flip to its ``ori_shape``, on the view's device."""
    image, meta = view
    height, width = image.shape[-2:]
    left, right, top, bottom = meta.get('img_padding_size',
                                        meta.get('padding_size', [0] * 4))
    flip = meta.get('flip', False)
    direction = meta.get('flip_direction')
    if flip and direction not in ('horizontal', 'vertical'):
        raise ValueError(f'flip_direction {direction!r} of '
                         f"{meta.get('img_path', 'an image')}: expected "
                         "'horizontal' or 'vertical'")
    out_h, out_w = meta['ori_shape'][:2]
    rows = axis_bands(
        tuple(grid[0]), int(head_size[0]), height, (top, bottom), flip
        and direction == 'vertical', out_h, align_corners, image.device)
    cols = axis_bands(
        tuple(grid[1]), int(head_size[1]), width, (left, right), flip
        and direction == 'horizontal', out_w, align_corners, image.device)
    return rows, cols


def merge_slide_windows(views: Sequence[View], crop_size: Tuple[int, int],
                        stride: Tuple[int, int], window_rule: str,
                        batch_size: int, crop_logits: CropLogits,
                        axis_bands: Callable[..., Tuple[AxisBand, ...]],
                        align_corners: bool) -> List[Tensor]:
    """Slide-window logits of each view at its ``ori_shape``: the windows
    of all the views cut, batched (``batch_size`` windows of one size at
    most per ``crop_logits`` call) and each window's logits added into its
    view's output through its bands.

    Args:
        views: (C, H, W) network inputs and their metainfo (``ori_shape``;
            ``flip``, ``flip_direction`` and padding if any).
        crop_size: (h, w) of a window.
        stride: (h, w) step between windows (``window_rule='stride'``).
        window_rule: see :func:`slide_window_grid`.
        batch_size: Most windows per ``crop_logits`` call.
        crop_logits: Logits of a batch of windows, before the decode head's
            resize to the window; gets each window's metainfo (the view's,
            with ``img_shape`` the window's).
        axis_bands: :func:`axis_bands` or a cache of it
            (:func:`axis_band_cache`).
        align_corners: The decode head's.

    Returns:
        list[Tensor]: (C, H, W) logits per view, of ``crop_logits``' dtype.
    """
    grids = []
    # Windows of one size can share a call; for one image larger than the
    # window they all have the crop size, in row-major order.
    by_size: Dict[Tuple[int, int], list] = {}
    for index, (image, _) in enumerate(views):
        rows, cols = slide_window_grid(*image.shape[-2:], crop_size, stride,
                                       window_rule)
        grids.append((rows, cols))
        for r, (y1, y2) in enumerate(rows):
            for c, (x1, x2) in enumerate(cols):
                by_size.setdefault((y2 - y1, x2 - x1), []).append(
                    (index, r, c))
    outputs: List[Optional[Tensor]] = [None] * len(views)
    bands: dict = {}
    chunks = [
        windows[first:first + batch_size] for windows in by_size.values()
        for first in range(0, len(windows), batch_size)
    ]
    for chunk in chunks:
        crops, metas = [], []
        for index, r, c in chunk:
            (y1, y2), (x1, x2) = grids[index][0][r], grids[index][1][c]
            crops.append(views[index][0][:, y1:y2, x1:x2])
            metas.append(
                dict(
                    views[index][1],
                    img_shape=torch.Size(crops[-1].shape[-2:])))
        logits = crop_logits(torch.stack(crops), metas)
        for (index, r, c), window_logits in zip(chunk, logits):
            if index not in bands:
                bands[index] = view_bands(axis_bands, views[index],
                                          grids[index],
                                          window_logits.shape[-2:],
                                          align_corners)
                outputs[index] = window_logits.new_zeros(
                    len(window_logits), *views[index][1]['ori_shape'][:2])
            add_window(outputs[index], window_logits, bands[index][0][r],
                       bands[index][1][c])
    return outputs
