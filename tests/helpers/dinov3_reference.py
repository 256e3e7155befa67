"""An independent plain-torch DINOv3 ViT forward pass on a state_dict in
Meta's layout, written from the formulas of Meta's code (facebookresearch/
dinov3 ``layers/rope_position_encoding.py``, ``layers/attention.py``,
``models/vision_transformer.py``), not from the project's modules.

One function, explicit steps: patch convolution (floored, no padding),
class + storage tokens in front, per block pre-norm attention with the key
bias zeroed and RoPE on the patch tokens only, explicit softmax attention,
LayerScale, MLP (GELU) or SwiGLU (``w3(silu(w1 x) * w2 x)``), final LayerNorm
eps 1e-5.
"""
import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5  # Meta's hub archs: norm_layer='layernormbf16'
BASE = 100.0


def _rope_sin_cos(height: int, width: int, head_dim: int):
    # periods[i] = base ** (2 i / (head_dim / 2)), i < head_dim / 4
    quarter = head_dim // 4
    periods = torch.tensor(
        [BASE**(2 * i / (head_dim // 2)) for i in range(quarter)],
        dtype=torch.float64)
    # Patch-cell centres, each axis on its own scale, mapped to [-1, 1].
    ys = [((r + 0.5) / height) * 2 - 1 for r in range(height)]
    xs = [((c + 0.5) / width) * 2 - 1 for c in range(width)]
    rows = []
    for y in ys:  # row-major patch order
        for x in xs:
            half = [2 * math.pi * y / p for p in periods.tolist()]
            half += [2 * math.pi * x / p for p in periods.tolist()]
            rows.append(half + half)  # the same angles for both halves
    angles = torch.tensor(rows, dtype=torch.float64)
    return angles.sin().float(), angles.cos().float()


def _rotate(t: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    half = t.shape[-1] // 2
    rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + rotated * sin


def reference_tokens(state: dict, x: Tensor, num_heads: int,
                     blocks_to_take: Sequence[int]) -> List[Tensor]:
    """Normed tokens (B, 1 + 4 + h * w, D) after each block in
    ``blocks_to_take``: class token, storage tokens, patches."""
    weight = state['patch_embed.proj.weight']
    patches = F.conv2d(x, weight, state['patch_embed.proj.bias'], stride=16)
    batch, dim, height, width = patches.shape
    tokens = torch.cat([
        state['cls_token'].expand(batch, -1, -1),
        state['storage_tokens'].expand(batch, -1, -1),
        patches.flatten(2).transpose(1, 2)
    ], 1)
    prefix = tokens.shape[1] - height * width
    head_dim = dim // num_heads
    sin, cos = _rope_sin_cos(height, width, head_dim)
    depth = 1 + max(
        int(k.split('.')[1]) for k in state if k.startswith('blocks.'))
    outputs = []
    for i in range(depth):
        p = f'blocks.{i}.'

        def ln(t, name):
            return F.layer_norm(t, (dim, ), state[name + '.weight'],
                                state[name + '.bias'], EPS)

        h = ln(tokens, p + 'norm1')
        qkv = h @ state[p + 'attn.qkv.weight'].T
        if p + 'attn.qkv.bias' in state:
            bias = state[p + 'attn.qkv.bias'].clone()
            bias[dim:2 * dim] = 0  # mask_k_bias: no key bias
            qkv = qkv + bias
        qkv = qkv.reshape(batch, -1, 3, num_heads, head_dim)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        # RoPE on the patch tokens only (class/storage tokens unrotated).
        q = torch.cat([q[:, :, :prefix],
                       _rotate(q[:, :, prefix:], sin, cos)], 2)
        k = torch.cat([k[:, :, :prefix],
                       _rotate(k[:, :, prefix:], sin, cos)], 2)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, -1, dim)
        out = out @ state[p + 'attn.proj.weight'].T + state[p +
                                                            'attn.proj.bias']
        tokens = tokens + out * state[p + 'ls1.gamma']
        h = ln(tokens, p + 'norm2')
        if p + 'mlp.w1.weight' in state:
            gate = F.linear(h, state[p + 'mlp.w1.weight'],
                            state[p + 'mlp.w1.bias'])
            value = F.linear(h, state[p + 'mlp.w2.weight'],
                             state[p + 'mlp.w2.bias'])
            h = F.linear(
                F.silu(gate) * value, state[p + 'mlp.w3.weight'],
                state[p + 'mlp.w3.bias'])
        else:
            h = F.linear(
                F.gelu(
                    F.linear(h, state[p + 'mlp.fc1.weight'],
                             state[p + 'mlp.fc1.bias'])),
                state[p + 'mlp.fc2.weight'], state[p + 'mlp.fc2.bias'])
        tokens = tokens + h * state[p + 'ls2.gamma']
        if i in blocks_to_take:
            outputs.append(
                F.layer_norm(tokens, (dim, ), state['norm.weight'],
                             state['norm.bias'], EPS))
    return outputs
