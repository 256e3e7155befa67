"""Building blocks of the DINOv3 vision transformer.

What DINOv3 shares with DINOv2 (the patch projection, the GELU MLP,
LayerScale) is imported from :mod:`.dinov2_layers`; what differs lives here:
rotary position embedding (RoPE) instead of a learned position table, a
query/key/value projection whose key bias is masked to zero, a SwiGLU with
three separate projections (``w1``/``w2``/``w3``, DINOv2's ViT-g fused
``w12``), and LayerNorm eps 1e-5. Attribute names (``rope_embed.periods``,
``attn.qkv.bias_mask``, ``ls1.gamma``, ``mlp.w1`` ...) are those of Meta's
released state_dicts, so the files load without a key mapping.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch import Tensor, nn

from .dinov2_layers import LayerScale, Mlp

# Meta's hub archs build their norms as ``layernormbf16``: eps 1e-5 (the
# DINOv2 layers use 1e-6).
LAYER_NORM_EPS = 1e-5
RopeTables = Tuple[Tensor, Tensor]  # (sin, cos), each (h * w, head_dim)


def rope_periods(head_dim: int, base: float) -> Tensor:
    """The ``head_dim // 4`` RoPE periods ``base ** (i / (head_dim // 4))``
    (one set per image axis, each used for a sine and a cosine), in
    float32 as Meta's hub archs keep them."""
    quarter = head_dim // 4
    return base**(torch.arange(quarter, dtype=torch.float32) / quarter)


class RopePositionEmbedding(nn.Module):
    """Sine/cosine tables rotating the patch tokens' queries and keys.

    Coordinates are patch-cell centres normalised per axis to [-1, 1]
    (``(i + 0.5) / h * 2 - 1``), so that the same table covers any grid
    and an image of another aspect ratio is not stretched to a square. The
    angles of a patch are ``2 pi * coord / period`` for its row coordinate
    and every period, then its column coordinate and every period; the list
    is repeated twice to cover the head dimension (rotate-half pairing).

    Everything is computed in float32 whatever the model's dtype: the hub
    archs run RoPE in float32, and bf16 angles of this size lose the
    fractional part that carries the position.

    Args:
        head_dim (int): Channels per attention head (a multiple of 4).
        base (float): Period base (100 for every DINOv3 arch).
        train_augment (dict, optional): Meta's pretraining coordinate
            augmentations, ``shift`` (add U(-s, s) per axis), ``jitter``
            (scale each axis by log-uniform [1/j, j]) and ``rescale`` (scale
            both axes by log-uniform [1/r, r]; the hub archs say 2). Off by
            default; when set, they act only while this module is in train
            mode, which a frozen backbone never is.
    """
    _AUGMENTS = ('shift', 'jitter', 'rescale')

    def __init__(self,
                 head_dim: int,
                 base: float = 100.0,
                 train_augment: Optional[dict] = None):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f'RoPE needs a head dim divisible by 4, got '
                             f'{head_dim}')
        unknown = set(train_augment or {}) - set(self._AUGMENTS)
        if unknown:
            raise KeyError(f'Unknown RoPE augmentation(s) {sorted(unknown)}; '
                           f'expected some of {self._AUGMENTS}')
        self.base = base
        self.train_augment = dict(train_augment or {})
        # Saved in Meta's files (``rope_embed.periods``), hence persistent.
        self.register_buffer('periods', rope_periods(head_dim, base))
        self._cache: dict = {}

    def _apply(self, fn, *args, **kwargs):
        # ``model.half()`` / ``.to(torch.bfloat16)`` would round the periods
        # (bf16 keeps 3 significant digits); they stay float32, moved only.
        periods = self.periods
        super()._apply(fn, *args, **kwargs)
        if self.periods.dtype != periods.dtype:
            self.periods = periods.to(self.periods.device)
        return self

    def coordinates(self, grid: Tuple[int, int]) -> Tensor:
        """(h * w, 2) float32 row/column coordinates of the cell centres,
        row-major, each axis in [-1, 1]; augmented in train mode if
        configured."""
        height, width = grid
        device = self.periods.device
        rows = (torch.arange(height, device=device) + 0.5) / height
        cols = (torch.arange(width, device=device) + 0.5) / width
        coords = torch.stack(
            torch.meshgrid(rows, cols, indexing='ij'), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        if self.training and self.train_augment:
            coords = self._augment(coords)
        return coords

    def _augment(self, coords: Tensor) -> Tensor:
        shift = self.train_augment.get('shift')
        jitter = self.train_augment.get('jitter')
        rescale = self.train_augment.get('rescale')
        if shift is not None:
            coords = coords + coords.new_empty(1, 2).uniform_(-shift, shift)
        if jitter is not None:
            log = math.log(jitter)
            coords = coords * coords.new_empty(1, 2).uniform_(-log, log).exp()
        if rescale is not None:
            log = math.log(rescale)
            coords = coords * coords.new_empty(1).uniform_(-log, log).exp()
        return coords

    def forward(self, grid: Tuple[int, int]) -> RopeTables:
        """(sin, cos) tables for a patch grid, each (h * w, head_dim),
        float32.

        Without augmentation and gradients the last result is cached (the
        slide windows of a test image share one grid); the key holds the
        buffer's version, so loading another file refreshes it. Compiled
        code (``--compile``) computes the tables inside its graph instead:
        Dynamo cannot trace the cache (a data pointer in its key, a dict
        replaced on a miss), which broke the graph in every forward, and the
        tables cost a few element-wise operations there.
        """
        if (torch.compiler.is_compiling() or torch.is_grad_enabled()
                or self.training and self.train_augment):
            return self._tables(grid)
        key = (tuple(grid), self.periods.device, self.periods._version,
               self.periods.data_ptr())
        if self._cache.get('key') != key:
            self._cache = dict(key=key, value=self._tables(grid))
        return self._cache['value']

    def _tables(self, grid: Tuple[int, int]) -> RopeTables:
        coords = self.coordinates(grid)
        periods = self.periods.float()
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
        angles = angles.flatten(1, 2).repeat(1, 2)
        return angles.sin(), angles.cos()


def apply_rope(x: Tensor, rope: RopeTables) -> Tensor:
    """Rotate the last ``h * w`` tokens of (..., N, head_dim) queries or
    keys (or both, stacked) in float32; the class and storage tokens in
    front stay as they are (they have no position).

    The rotation ``x * cos + rotate_half(x) * sin``, with ``rotate_half``
    mapping halves (x1, x2) to (-x2, x1), is computed as ``x * cos +
    roll(x) * signed_sin``: one pass over the tokens fewer than negating
    and concatenating the halves, which dominated DINOv3's CPU time.
    """
    sin, cos = rope
    prefix = x.shape[-2] - sin.shape[0]
    patches = x[..., prefix:, :].float()
    half = patches.shape[-1] // 2
    signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
    rotated = torch.addcmul(patches * cos, patches.roll(half, dims=-1),
                            signed_sin)
    return torch.cat([x[..., :prefix, :], rotated.to(x.dtype)], dim=-2)


class MaskedKeyBiasLinear(nn.Linear):
    """The fused q/k/v projection of DINOv3: its bias is multiplied by a
    stored ``bias_mask`` (ones, zeros over the key third), so the key bias
    is zero whatever the file holds in that slice.

    Meta creates the mask as NaN and fills it in ``init_weights``; here it is
    built filled, so a model that never loads a file (or loads one that lacks
    the buffer) computes with the right mask rather than NaN.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__(in_features, out_features, bias=bias)
        if bias:
            mask = torch.ones(out_features)
            mask[out_features // 3:2 * out_features // 3] = 0
            self.register_buffer('bias_mask', mask)
        else:
            self.bias_mask = None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else \
            self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


class RopeAttention(nn.Module):
    """Multi-head self-attention (``scaled_dot_product_attention``) with RoPE
    on the patch tokens' queries and keys."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MaskedKeyBiasLinear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self,
                x: Tensor,
                rope: Optional[RopeTables] = None,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        """``attn_mask``: optional (B, N, N) booleans, True where a token
        (row) may attend to another (column); shared by the heads."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads,
                                  dim // self.num_heads).permute(
                                      2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:  # queries and keys in one pass
            q, k = apply_rope(qkv[:2], rope).unbind(0)
        if attn_mask is not None:
            attn_mask = attn_mask[:, None]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class SwiGLUFFN(nn.Module):
    """SwiGLU with separate gate (``w1``), value (``w2``) and output (``w3``)
    projections: ``w3(silu(w1 x) * w2 x)``.

    The hidden width is ``int(hidden_dim * 2 / 3)`` rounded up to a
    multiple of ``align`` (8 for S+/L+/H+, 64 for 7B), which is what gives
    the released files' shapes.
    """

    def __init__(self, dim: int, hidden_dim: int, align: int = 8):
        super().__init__()
        hidden = int(hidden_dim * 2 / 3)
        hidden += -hidden % align
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    """Pre-norm DINOv3 transformer block: RoPE attention and an MLP or
    SwiGLU, each with LayerScale and optional stochastic depth."""

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 ffn: str = 'mlp',
                 ffn_ratio: float = 4.0,
                 swiglu_align: int = 8,
                 qkv_bias: bool = True,
                 layer_scale_init: float = 1e-5,
                 drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * ffn_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = RopeAttention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        if ffn == 'mlp':
            self.mlp = Mlp(dim, hidden)
        elif ffn == 'swiglu':
            self.mlp = SwiGLUFFN(dim, hidden, swiglu_align)
        else:
            raise KeyError(f"Unknown DINOv3 FFN {ffn!r}; expected 'mlp' or "
                           "'swiglu'")
        self.ls2 = LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(
            drop_path) if drop_path > 0 else nn.Identity()

    def forward(self,
                x: Tensor,
                rope: Optional[RopeTables] = None,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        x = x + self.drop_path(
            self.ls1(self.attn(self.norm1(x), rope, attn_mask)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
