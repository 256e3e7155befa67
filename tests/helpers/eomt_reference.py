"""An independent EoMT forward pass in plain torch, from a state_dict in
EoMT's own names (tue-mps/eomt's models/eomt.py and timm's ViT), written
from the paper and that code rather than from dinov2_seg's modules.

:func:`to_eomt_names` maps this project's segmentor state_dicts to those
names, so that the same reference checks models trained here and
EoMT's released files.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

B = 'network.encoder.backbone.'
MEAN = torch.tensor([123.675, 116.28, 103.53]).reshape(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).reshape(3, 1, 1)


def to_eomt_names(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """A segmentor state_dict of this project in EoMT's names (the
    class-token position stays in ``pos_embed``: the reference adds
    ``pos_embed`` to the class token too when it has a row for it)."""
    names = {
        'decode_head.query_embed.': 'network.q.',
        'decode_head.cls_embed.': 'network.class_head.',
        'decode_head.mask_embed.': 'network.mask_head.',
        'decode_head.upscale.': 'network.upscale.',
        'backbone.register_tokens': B + 'reg_token',
        'backbone.': B,
    }
    out = {}
    for key, value in state.items():
        for old, new in names.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


def normalise(image: Tensor) -> Tensor:
    """A (3, H, W) BGR uint8 image as the network input: RGB, ImageNet
    statistics (EoMT: /255 then torchvision's mean and std)."""
    return (image.flip(0).float() - MEAN) / STD


def layer_norm(x: Tensor, w: dict, prefix: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], w[prefix + 'weight'],
                        w[prefix + 'bias'], 1e-6)


def linear(x: Tensor, w: dict, prefix: str) -> Tensor:
    return x @ w[prefix + 'weight'].T + w[prefix + 'bias']


def block(x: Tensor, w: dict, prefix: str, heads: int,
          allowed: Optional[Tensor]) -> Tensor:
    """timm's Block: pre-norm attention and MLP, each scaled by LayerScale;
    ``allowed`` (B, N, N) masks the attention scores."""
    batch, tokens, dim = x.shape
    qkv = linear(layer_norm(x, w, prefix + 'norm1.'), w, prefix + 'attn.qkv.')
    q, k, v = qkv.reshape(batch, tokens, 3, heads,
                          dim // heads).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(dim // heads)
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None], float('-inf'))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(
        batch, tokens, dim)
    x = x + w[prefix + 'ls1.gamma'] * linear(attended, w,
                                             prefix + 'attn.proj.')
    hidden = F.gelu(
        linear(layer_norm(x, w, prefix + 'norm2.'), w, prefix + 'mlp.fc1.'))
    return x + w[prefix + 'ls2.gamma'] * linear(hidden, w, prefix + 'mlp.fc2.')


def predict(x: Tensor, w: dict, queries: int, prefix_tokens: int,
            grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """EoMT's _predict on the final-normed tokens: class logits of the
    queries, and their mask-MLP embeddings dotted with the patch tokens
    upsampled by the ScaleBlocks (transposed conv, GELU, depthwise conv,
    LayerNorm over channels)."""
    x = layer_norm(x, w, B + 'norm.')
    q = x[:, :queries]
    classes = linear(q, w, 'network.class_head.')
    embed = q
    for index in (0, 2, 4):
        embed = linear(embed, w, f'network.mask_head.{index}.')
        if index < 4:
            embed = F.gelu(embed)
    pixels = x[:, queries + prefix_tokens:].transpose(1, 2).reshape(
        len(x), -1, *grid)
    index = 0
    while f'network.upscale.{index}.conv1.weight' in w:
        p = f'network.upscale.{index}.'
        pixels = F.conv_transpose2d(
            pixels, w[p + 'conv1.weight'], w[p + 'conv1.bias'], stride=2)
        pixels = F.conv2d(
            F.gelu(pixels),
            w[p + 'conv2.weight'],
            padding=1,
            groups=pixels.shape[1])
        mean = pixels.mean(1, keepdim=True)
        var = pixels.var(1, keepdim=True, unbiased=False)
        pixels = (pixels - mean) / torch.sqrt(var + 1e-6)
        pixels = (
            w[p + 'norm.weight'][:, None, None] * pixels +
            w[p + 'norm.bias'][:, None, None])
        index += 1
    masks = torch.einsum('bqc,bchw->bqhw', embed, pixels)
    return masks, classes


def eomt_forward(w: dict,
                 images: Tensor,
                 heads: int,
                 num_blocks: int,
                 masked: bool = False) -> List[Tuple[Tensor, Tensor]]:
    """EoMT's forward on normalised (B, 3, H, W) images whose sides are
    multiples of the patch and whose patch grid is the stored position
    grid (no resizing, no padding).

    Returns the (mask logits, class logits) of every block with queries
    (``masked``: each query attends only inside its predicted mask, as in
    training with masking probability 1) and after the last block; without
    ``masked``, the final prediction only, as at inference.
    """
    patch = w[B + 'patch_embed.proj.weight'].shape[-1]
    x = F.conv2d(
        images,
        w[B + 'patch_embed.proj.weight'],
        w[B + 'patch_embed.proj.bias'],
        stride=patch)
    grid = tuple(x.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    cls = w[B + 'cls_token'].expand(len(x), -1, -1)
    pos = w[B + 'pos_embed']
    if pos.shape[1] == x.shape[1]:  # timm's no_embed_class
        x = torch.cat([cls, x + pos], 1)
    else:
        x = torch.cat([cls, x], 1) + pos
    registers = w.get(B + 'reg_token')
    if registers is not None:
        x = torch.cat(
            [x[:, :1], registers.expand(len(x), -1, -1), x[:, 1:]], 1)
    prefix_tokens = 1 + (0 if registers is None else registers.shape[1])
    queries = w['network.q.weight']
    depth = 1 + max(
        int(k[len(B + 'blocks.'):].split('.')[0])
        for k in w if k.startswith(B + 'blocks.'))
    outputs = []
    for index in range(depth):
        allowed = None
        if index == depth - num_blocks:
            x = torch.cat([queries.expand(len(x), -1, -1), x], 1)
        if masked and index >= depth - num_blocks:
            masks, classes = predict(x, w, len(queries), prefix_tokens, grid)
            outputs.append((masks, classes))
            inside = F.interpolate(masks, grid, mode='bilinear') > 0
            allowed = torch.ones(
                len(x), x.shape[1], x.shape[1], dtype=torch.bool)
            allowed[:, :len(queries),
                    len(queries) + prefix_tokens:] = inside.flatten(2)
        x = block(x, w, f'{B}blocks.{index}.', heads, allowed)
    outputs.append(predict(x, w, len(queries), prefix_tokens, grid))
    return outputs


def class_map(masks: Tensor,
              classes: Tensor,
              size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Semantic probabilities: softmax over the classes without "no
    object" times the mask sigmoids, summed over the queries; ``size``
    upsamples the mask logits first (EoMT's evaluation)."""
    if size is not None:
        masks = F.interpolate(masks, size, mode='bilinear')
    return torch.einsum('bqc,bqhw->bchw',
                        classes.softmax(-1)[..., :-1], masks.sigmoid())


def window_starts(length: int, crop: int, stride: int) -> Sequence[int]:
    """mmseg 1.x's slide_inference window origins along one side."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [min(i * stride, max(length - crop, 0)) for i in range(count)]


def slide(image: Tensor, window_map, crop: int, stride: int) -> Tensor:
    """Windows of a (3, H, W) input, each window's class map resized to
    the window, averaged where windows overlap (mmseg's slide)."""
    height, width = image.shape[-2:]
    total = count = 0
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            window = image[:, top:top + crop, left:left + crop]
            probs = window_map(window[None])
            probs = F.interpolate(probs, window.shape[-2:], mode='bilinear')[0]
            padding = (left, width - left - window.shape[-1], top,
                       height - top - window.shape[-2])
            total = total + F.pad(probs, padding)
            count = count + F.pad(torch.ones(1, *window.shape[-2:]), padding)
    return total / count


# ------------------------------------------------- EoMT's semantic evaluation
# From window_imgs_semantic, scale_img_size_semantic and
# revert_window_logits_semantic of tue-mps/eomt's
# training/lightning_module.py.


def eomt_resized_size(height: int, width: int, short: int) -> Tuple[int, int]:
    """EoMT's evaluation size: both sides times short / (shorter side),
    rounded (Python's round)."""
    factor = max(short / height, short / width)
    return round(height * factor), round(width * factor)


def pil_bilinear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to ``size`` (h, w) with PIL's
    bilinear filter, as EoMT resizes its evaluation images."""
    return np.asarray(
        Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def eomt_window_starts(length: int, crop: int) -> List[int]:
    """EoMT's windows along the longer side: ceil(length / crop) of them,
    the total overlap shared evenly between the gaps, starts truncated."""
    count = math.ceil(length / crop)
    overlap = count * crop - length
    per_gap = overlap / (count - 1) if overlap > 0 else 0
    return [int(j * (crop - per_gap)) for j in range(count)]


def eomt_semantic(image: Tensor, window_map, crop: int,
                  out_size: Tuple[int, int]) -> Tensor:
    """EoMT's semantic evaluation of a normalised (3, h, w) input whose
    shorter side is ``crop``: the class maps of the windows along the
    longer side, averaged where they overlap, resized bilinearly to
    ``out_size``."""
    height, width = image.shape[-2:]
    axis = 1 if height > width else 2
    total = count = 0
    for start in eomt_window_starts(max(height, width), crop):
        window = image.narrow(axis, start, crop)
        probs = window_map(window[None])[0]
        after = max(height, width) - start - crop
        padding = (0, 0, start, after) if axis == 1 else (start, after)
        total = total + F.pad(probs, padding)
        count = count + F.pad(torch.ones(1, *window.shape[-2:]), padding)
    return F.interpolate((total / count)[None], out_size, mode='bilinear')[0]
