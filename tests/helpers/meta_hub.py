"""A stand-in for Meta's torch.hub DINOv2 model (``dinov2_vits14`` and
kin), written for the tests with plain torch modules: the attribute names of
facebookresearch/dinov2's ``DinoVisionTransformer`` (so its state_dict has
the released files' keys) and the behaviour of its
``get_intermediate_layers``, as read in ``dinov2/models/vision_transformer``
and ``dinov2/layers`` (hub models: unchunked blocks, LayerScale, LayerNorm
eps 1e-6, qkv bias). Nothing here imports the project."""
import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH = 14


class PatchEmbed(nn.Module):

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        # Meta's patch embedding asserts sides that are multiples of 14.
        assert x.shape[-2] % PATCH == 0 and x.shape[-1] % PATCH == 0
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Attention(nn.Module):

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads,
                                   dim // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFused(nn.Module):
    """ViT-g's FFN: hidden width 2/3 of 4 * dim rounded up to a multiple
    of 8; gate and value fused in ``w12`` (gate first)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class Block(nn.Module):

    def __init__(self, dim: int, heads: int, ffn: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLUFused(dim) if ffn == 'swiglu' else Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class MetaDinoViT(nn.Module):
    """Meta's hub backbone (pretraining size 518: 37 x 37 position
    embeddings). ``offset`` and ``antialias`` are the positional-embedding
    resize settings: 0.1 and False for the original models, 0.0 and True
    for the register models."""

    def __init__(self,
                 dim: int,
                 depth: int,
                 heads: int,
                 registers: int = 0,
                 offset: float = 0.1,
                 antialias: bool = False,
                 ffn: str = 'mlp'):
        super().__init__()
        self.registers, self.offset, self.antialias = (registers, offset,
                                                       antialias)
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 37 * 37, dim))
        if registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.blocks = nn.ModuleList(
            Block(dim, heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, dim))

    def position_embedding(self, rows: int, cols: int) -> Tensor:
        side = int(math.sqrt(self.pos_embed.shape[1] - 1))
        pos = self.pos_embed.float()
        if (rows, cols) == (side, side):
            return pos
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if self.offset:
            # Meta's original models: scale factors with a small offset.
            size = dict(
                scale_factor=((rows + self.offset) / side,
                              (cols + self.offset) / side))
        else:
            size = dict(size=(rows, cols))
        grid = F.interpolate(
            grid, mode='bicubic', antialias=self.antialias, **size)
        assert grid.shape[-2:] == (rows, cols)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)

    def tokens(self, x: Tensor) -> Tensor:
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        seq = self.patch_embed(x)
        seq = torch.cat([self.cls_token.expand(len(x), -1, -1), seq], 1)
        seq = seq + self.position_embedding(rows, cols)
        if self.registers:
            seq = torch.cat([
                seq[:, :1],
                self.register_tokens.expand(len(x), -1, -1), seq[:, 1:]
            ], 1)
        return seq

    def get_intermediate_layers(self,
                                x: Tensor,
                                n: Union[int, Sequence[int]] = 1,
                                reshape: bool = False,
                                norm: bool = True) -> tuple:
        """The outputs of the blocks ``n`` (indices, or the last ``n``),
        normed, class and register tokens dropped, as (B, C, h, w) maps
        when ``reshape``."""
        take = (
            range(len(self.blocks) -
                  n, len(self.blocks)) if isinstance(n, int) else n)
        seq, outputs = self.tokens(x), []
        for i, block in enumerate(self.blocks):
            seq = block(seq)
            if i in take:
                outputs.append(seq)
        assert len(outputs) == len(take)
        if norm:
            outputs = [self.norm(out) for out in outputs]
        outputs = [out[:, 1 + self.registers:] for out in outputs]
        if reshape:
            rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
            outputs = [
                out.reshape(len(x), rows, cols, -1).permute(0, 3, 1, 2)
                for out in outputs
            ]
        return tuple(outputs)


def center_pad(x: Tensor, multiple: int = PATCH) -> Tensor:
    """The official segmentation models' forward pre-hook: zero padding to
    a multiple of ``multiple``, the odd pixel after (bottom/right)."""
    pads = []
    for side in (x.shape[-1], x.shape[-2]):
        extra = math.ceil(side / multiple) * multiple - side
        pads += [extra // 2, extra - extra // 2]
    return F.pad(x, pads)


def segmentation_features(model: MetaDinoViT, x: Tensor,
                          blocks: Sequence[int]) -> tuple:
    """What Meta's segmentation wiring feeds the head: the center-padded
    input through ``get_intermediate_layers(n=blocks, reshape=True)``."""
    return model.get_intermediate_layers(center_pad(x), blocks, reshape=True)


def perturbed(model: nn.Module, seed: int = 0, std: float = 0.05):
    """``model`` with every parameter moved off its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(std * torch.randn(param.shape, generator=generator))
    return model.eval()
