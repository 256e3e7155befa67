"""Independent references for the tests: the published formulas written
with plain tensor ops on a state_dict in Meta's layout, never calling the
project's modules."""
import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

StateDict = Dict[str, Tensor]


def layer_norm(x: Tensor,
               sd: StateDict,
               name: str,
               eps: float = 1e-6) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'],
                        sd[name + '.bias'], eps)


def linear(x: Tensor, sd: StateDict, name: str) -> Tensor:
    return x @ sd[name + '.weight'].T + sd[name + '.bias']


def vit_block(sd: StateDict, prefix: str, seq: Tensor,
              num_heads: int) -> Tensor:
    """One DINOv2 block: pre-norm attention and FFN (GELU MLP, or SwiGLU
    with the gate in the first half of ``w12``), each with LayerScale."""
    batch, tokens, dim = seq.shape
    head_dim = dim // num_heads
    h = layer_norm(seq, sd, prefix + 'norm1')
    q, k, v = linear(h, sd, prefix + 'attn.qkv').reshape(
        batch, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).softmax(-1)
    h = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
    seq = seq + sd[prefix + 'ls1.gamma'] * linear(h, sd, prefix + 'attn.proj')
    h = layer_norm(seq, sd, prefix + 'norm2')
    if prefix + 'mlp.w12.weight' in sd:
        gate, value = linear(h, sd, prefix + 'mlp.w12').chunk(2, -1)
        h = linear(F.silu(gate) * value, sd, prefix + 'mlp.w3')
    else:
        h = linear(
            F.gelu(linear(h, sd, prefix + 'mlp.fc1')), sd, prefix + 'mlp.fc2')
    return seq + sd[prefix + 'ls2.gamma'] * h


def resize_pos_embed(pos: Tensor, grid: Sequence[int], offset: float,
                     antialias: bool) -> Tensor:
    """The patch part of a (1, 1 + side^2, C) embedding resized bicubically
    to ``grid`` (h, w): (1, h * w, C). Meta's original models resize by
    scale factors (h + offset) / side, the register models to the size."""
    side = int(math.sqrt(pos.shape[1] - 1))
    height, width = grid
    patches = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if (height, width) == (side, side):
        resized = patches
    elif offset:
        resized = F.interpolate(
            patches,
            scale_factor=((height + offset) / side, (width + offset) / side),
            mode='bicubic',
            antialias=antialias)
    else:
        resized = F.interpolate(
            patches, size=(height, width), mode='bicubic', antialias=antialias)
    return resized.flatten(2).transpose(1, 2)


def reference_features(sd: StateDict, x: Tensor, num_heads: int,
                       registers: int, offset: float, antialias: bool,
                       blocks_to_take: Sequence[int]) -> List[Tensor]:
    """The official segmentation features: center padding to a multiple of
    14, patch embedding, class token, positional embedding, registers, the
    blocks, the final norm on the chosen blocks' patch tokens as NCHW."""
    patch = 14
    height, width = x.shape[-2:]
    new_h = math.ceil(height / patch) * patch
    new_w = math.ceil(width / patch) * patch
    top, left = (new_h - height) // 2, (new_w - width) // 2
    padded = x.new_zeros(x.shape[0], 3, new_h, new_w)
    padded[:, :, top:top + height, left:left + width] = x

    tokens = F.conv2d(
        padded,
        sd['patch_embed.proj.weight'],
        sd['patch_embed.proj.bias'],
        stride=patch)
    batch, dim, gh, gw = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    pos = sd['pos_embed']
    seq = torch.cat([sd['cls_token'].expand(batch, -1, -1), tokens], 1)
    seq = seq + torch.cat(
        [pos[:, :1],
         resize_pos_embed(pos, (gh, gw), offset, antialias)], 1)
    if registers:
        seq = torch.cat([
            seq[:, :1], sd['register_tokens'].expand(batch, -1, -1), seq[:, 1:]
        ], 1)

    outputs = []
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks'))
    for i in range(depth):
        seq = vit_block(sd, f'blocks.{i}.', seq, num_heads)
        if i in blocks_to_take:
            out = layer_norm(seq, sd, 'norm')[:, 1 + registers:]
            outputs.append(out.reshape(batch, gh, gw, dim).permute(0, 3, 1, 2))
    return outputs
