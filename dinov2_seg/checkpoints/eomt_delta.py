"""EoMT's released DINOv3 models loaded as published: files of differences
("deltas") to add to Meta's DINOv3 backbone file, which EoMT may not
redistribute (tue-mps/eomt model_zoo/dinov3.md, e.g.
``ade_semantic_eomt_large_512_dinov3``'s ``pytorch_model.bin`` on top of
``dinov3_vitl16_pretrain_lvd1689m-*.pth``).

How EoMT itself rebuilds the model (training/lightning_module.py with
``delta_weights: True``): it builds its Lightning module, whose ViT is
transformers' ``DINOv3ViTModel`` from ``facebook/dinov3-<arch>-pretrain-
lvd1689m`` (Meta's file converted by transformers), zeroes every parameter
outside ``network.encoder.``, and adds the file's tensor to every tensor of
its state_dict, requiring one for each. So the file covers the whole model:

* ``network.encoder.backbone.*``: the ViT's change from Meta's weights, in
  transformers' names as EoMT's models/vit.py rearranges them
  (``embeddings`` -> ``patch_embed``, ``layer`` -> ``blocks``, no mask
  token); query, key and value projections apart, the key without a bias
  (Meta's files hold one and mask it to zero).
* ``network.encoder.pixel_mean`` / ``pixel_std``: the change to ImageNet's
  statistics (buffers of EoMT's ViT wrapper).
* ``network.q``, ``class_head``, ``mask_head``, ``upscale``: parameters
  that start from zero, so the values themselves.
* ``network.attn_mask_probs``: a buffer, the change to the fresh module's
  ones.
* ``criterion.empty_weight``, when present: dropped, as EoMT drops it.

Here the ViT's deltas are placed onto Meta's layout and added to Meta's
file, whose tensors that transformers' model does not hold (RoPE periods,
key-bias mask, mask token, local-crop class norm) are kept as they are;
the rest is summed as EoMT does and renamed by eomt.py.
"""
import os.path as osp
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .arch_detection import describe_dinov3_arch
from .catalog import GATED_FILES
from .eomt import EOMT_BACKBONE, PIXEL_STATS, convert_eomt_head
from .foreign_dinov3 import to_dinov3_layout
from .reading import extract_state_dict, read_checkpoint
from .strict_check import check_state_dict

StateDict = Dict[str, Tensor]
Tensors = Mapping[str, Tensor]
Parts = List[Tuple[str, slice]]

# Meta's tensors that transformers' DINOv3ViTModel does not hold, hence
# no delta: they keep the base file's values.
_META_ONLY = re.compile(r'^(mask_token|rope_embed\.periods|local_cls_norm\.\w+'
                        r'|blocks\.\d+\.attn\.qkv\.bias_mask)$')
# Meta's names -> EoMT's (under network.encoder.backbone.); the norms keep
# their names.
_RENAMES = [
    (r'^cls_token$', 'patch_embed.cls_token'),
    (r'^storage_tokens$', 'patch_embed.register_tokens'),
    (r'^patch_embed\.proj\.', 'patch_embed.patch_embeddings.'),
    (r'^blocks\.(\d+)\.attn\.proj\.', r'blocks.\1.attention.o_proj.'),
    (r'^blocks\.(\d+)\.ls(\d)\.gamma$', r'blocks.\1.layer_scale\2.lambda1'),
    (r'^blocks\.(\d+)\.mlp\.(?:fc1|w2)\.', r'blocks.\1.mlp.up_proj.'),
    (r'^blocks\.(\d+)\.mlp\.(?:fc2|w3)\.', r'blocks.\1.mlp.down_proj.'),
    (r'^blocks\.(\d+)\.mlp\.w1\.', r'blocks.\1.mlp.gate_proj.'),
]
_QKV = re.compile(r'^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$')
_LAYER_NORM_WEIGHT = re.compile(r'(^|\.)norm\d?\.weight$')
# EoMT's yaml loads facebook/dinov3-<arch>-pretrain-lvd1689m.
_WEIGHTS = 'lvd1689m'


def eomt_parts(meta_key: str, shape: Tuple[int, ...]) -> Parts:
    """EoMT's ViT keys (without ``network.encoder.backbone.``) that hold the
    deltas of Meta's tensor ``meta_key`` of ``shape``, each with the rows
    of it that it covers; none for the tensors EoMT's ViT does not hold."""
    if _META_ONLY.match(meta_key):
        return []
    match = _QKV.match(meta_key)
    if match:
        block, kind = match.groups()
        rows = shape[0] // 3
        # transformers' key projection has no bias (Meta masks its third).
        names = 'qv' if kind == 'bias' else 'qkv'
        return [(f'blocks.{block}.attention.{name}_proj.{kind}',
                 slice(i * rows, (i + 1) * rows))
                for i, name in enumerate('qkv') if name in names]
    for pattern, replacement in _RENAMES:
        renamed, count = re.subn(pattern, replacement, meta_key)
        if count:
            return [(renamed, slice(None))]
    return [(meta_key, slice(None))]


def _delta_arch(deltas: Tensors, base: Optional[Tensors] = None) -> str:
    """The DINOv3 preset the ViT deltas were made for (as
    :func:`describe_dinov3_arch` names it), read from their shapes; the
    class norms transformers drops are taken from ``base``."""
    cls_token = deltas.get('patch_embed.cls_token')
    if cls_token is None:
        return 'unknown (no patch_embed.cls_token)'
    dim = cls_token.shape[-1]
    view = {'cls_token': cls_token}
    if 'patch_embed.register_tokens' in deltas:
        view['storage_tokens'] = deltas['patch_embed.register_tokens']
    for key in deltas:
        match = re.match(r'^blocks\.(\d+)\.', key)
        if match:
            view[f'blocks.{match.group(1)}.norm1.weight'] = cls_token
    swiglu = 'blocks.0.mlp.gate_proj.weight' in deltas
    names = ('gate_proj', 'w1') if swiglu else ('up_proj', 'fc1')
    ffn_in = deltas.get(f'blocks.0.mlp.{names[0]}.weight')
    if ffn_in is not None:
        view[f'blocks.0.mlp.{names[1]}.weight'] = ffn_in
    if 'blocks.0.attention.q_proj.bias' in deltas:
        view['blocks.0.attn.qkv.bias'] = cls_token.new_empty(3 * dim)
    for key in (base or {}):
        if key.startswith(('local_cls_norm.', 'cls_norm.')):
            view[key] = base[key]
    return describe_dinov3_arch(view)


def _meta_file_name(arch: str) -> Optional[str]:
    names = [
        name for name, entry in GATED_FILES.items()
        if entry.arch == arch and f'_{_WEIGHTS}-' in name
    ]
    return names[0] if names else None


def needed_base_file(arch: str) -> str:
    """The Meta file an EoMT delta of ``arch`` is added to, by name."""
    name = _meta_file_name(arch)
    if name is None:
        return "Meta's DINOv3 backbone file of that size"
    return (f"Meta's dinov3_{arch}_pretrain_{_WEIGHTS}-*.pth ({name}, "
            'gated: see docs/dinov3.md)')


def _check_sizes(deltas: Tensors, base: Tensors, delta_source: str,
                 base_source: str) -> None:
    base_arch = describe_dinov3_arch(base) if 'cls_token' in base else \
        'not a DINOv3 backbone (no cls_token)'
    delta_arch = _delta_arch(deltas, base)
    if base_arch != delta_arch:
        raise ValueError(
            f'EoMT\'s delta file {delta_source} was made for a DINOv3 ViT of '
            f'arch {delta_arch!r}, but the base file {base_source} is arch '
            f'{base_arch!r}: the deltas must be added to '
            f'{needed_base_file(delta_arch)} (model.backbone.init_cfg.'
            'checkpoint).')


def _check_not_absolute(deltas: Tensors, targets: Tensors, delta_source: str,
                        base_source: str) -> None:
    """Refuse a file whose ViT is whole weights rather than changes (EoMT
    writes those when trained with ``--model.delta_weights False``): its
    LayerNorm weights sit nearer the base's than zero, where a fine-tuning's
    changes are small next to the weights."""
    norms = [k for k in deltas if _LAYER_NORM_WEIGHT.search(k)]
    if not norms or any(deltas[k].is_meta for k in norms):
        return  # shapes only
    size = sum(float(deltas[k].float().abs().sum()) for k in norms)
    offset = sum(
        float((deltas[k].float() - targets[k].float()).abs().sum())
        for k in norms)
    if offset < size:
        raise ValueError(
            f'{delta_source} holds whole ViT weights, not EoMT\'s deltas: its '
            f'LayerNorm weights are closer to those of {base_source} than to '
            f'zero (their distance to the base\'s is {offset / size:.3g} of '
            'their size). Adding them to the base file would double the '
            'ViT; this loader takes the deltas EoMT releases for DINOv3.')


def add_eomt_backbone_deltas(deltas: Tensors, base: Tensors, delta_source: str,
                             base_source: str) -> StateDict:
    """Meta's DINOv3 backbone state_dict ``base`` plus EoMT's ViT deltas
    (keys without ``network.encoder.backbone.``), in Meta's layout.

    Raises:
        ValueError: if the base is of another size than the deltas (naming
            both), if a delta has no base tensor or one of another shape, or
            a base tensor that EoMT's ViT holds has no delta (naming the keys
            in EoMT's names), or if the file holds whole weights.
    """
    _check_sizes(deltas, base, delta_source, base_source)
    places = {}
    for meta_key, tensor in base.items():
        for eomt_key, rows in eomt_parts(meta_key, tuple(tensor.shape)):
            places[EOMT_BACKBONE + eomt_key] = (meta_key, rows)
    targets = {
        key: base[meta_key][rows]
        for key, (meta_key, rows) in places.items()
    }
    prefixed = {EOMT_BACKBONE + k: v for k, v in deltas.items()}
    check_state_dict(
        targets, prefixed, delta_source,
        f"Meta's DINOv3 backbone file {base_source} in EoMT's names", [
            'Every ViT delta needs its tensor in the base file (unexpected '
            'keys), and every base tensor that EoMT\'s ViT holds needs its '
            'delta (missing keys).'
        ])
    _check_not_absolute(prefixed, targets, delta_source, base_source)
    summed = {
        key: value.float().clone() if value.is_floating_point() else value
        for key, value in base.items()
    }
    for key, (meta_key, rows) in places.items():
        summed[meta_key][rows] += prefixed[key].float()
    return summed


def add_eomt_head_deltas(deltas: Tensors) -> StateDict:
    """EoMT's tensors outside the ViT, summed as EoMT does: parameters start
    from zero, the masking probabilities from ones, the pixel statistics
    from ImageNet's (then checked by eomt.py)."""
    summed = {}
    for key, value in deltas.items():
        if key in PIXEL_STATS:
            start = torch.tensor(PIXEL_STATS[key]).reshape(1, 3, 1, 1)
            value = start + value.float() if value.shape == start.shape \
                else value
        elif key == 'network.attn_mask_probs':
            value = 1 + value.float()
        summed[key] = value
    return summed


def apply_eomt_deltas(state_dict: Tensors, base: Tensors, delta_source: str,
                      base_source: str) -> StateDict:
    """EoMT's DINOv3 delta state_dict plus Meta's backbone state_dict
    ``base`` -> :class:`EoMTSegmentor`'s state_dict (head and
    ``backbone.*`` in Meta's layout)."""
    backbone = {
        k[len(EOMT_BACKBONE):]: v
        for k, v in state_dict.items() if k.startswith(EOMT_BACKBONE)
    }
    rest = {
        k: v
        for k, v in state_dict.items() if not k.startswith(EOMT_BACKBONE)
    }
    converted = convert_eomt_head(add_eomt_head_deltas(rest))
    converted.update({
        f'backbone.{k}': v
        for k, v in add_eomt_backbone_deltas(backbone, base, delta_source,
                                             base_source).items()
    })
    return converted


def _base_file(model: nn.Module, state_dict: Tensors,
               delta_source: str) -> str:
    backbone = {
        k[len(EOMT_BACKBONE):]: v
        for k, v in state_dict.items() if k.startswith(EOMT_BACKBONE)
    }
    arch = _delta_arch(backbone)
    need = (f'{delta_source} is one of EoMT\'s DINOv3 files, made for a '
            f'DINOv3 ViT of arch {arch!r}: deltas to add to '
            f'{needed_base_file(arch)}')
    init_cfg = getattr(model.backbone, 'init_cfg', None) or {}
    filename = init_cfg.get('checkpoint') \
        if init_cfg.get('type') == 'Pretrained' else None
    if not filename:
        example = _meta_file_name(arch) or 'META_FILE.pth'
        raise ValueError(
            f'{need}, but model.backbone.init_cfg names no backbone file; '
            'set it, e.g. --cfg-options model.backbone.init_cfg.checkpoint='
            f'checkpoints/{example}')
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(
            f'{need}, expected at {filename} (model.backbone.init_cfg.'
            'checkpoint), which does not exist.')
    return filename


def load_eomt_deltas(model: nn.Module,
                     state_dict: Tensors,
                     delta_source: str,
                     backbone_loaded: bool = False) -> StateDict:
    """:func:`apply_eomt_deltas` with the base taken from ``model``: the
    file of ``model.backbone.init_cfg`` (Meta's layout; timm's and
    transformers' are converted), checked strictly against the backbone,
    or the backbone's own weights when ``backbone_loaded``.

    Raises:
        ValueError: if the config's backbone is not a DINOv3 ViT, if no base
            file is configured (naming the one needed), or as
            :func:`add_eomt_backbone_deltas`.
        FileNotFoundError: if the configured base file does not exist.
    """
    layout = getattr(model.backbone, 'checkpoint_layout', None) or {}
    if layout.get('family') != 'dinov3':
        raise ValueError(
            f'{delta_source} is one of EoMT\'s DINOv3 files, but the '
            f'config\'s backbone is {type(model.backbone).__name__}; use a '
            'DINOv3 EoMT config such as '
            'configs/dinov3/ade20k_vitl16_eomt_official.py')
    expected = model.backbone.state_dict()
    if backbone_loaded:
        base = dict(expected)
        base_source = 'the backbone given in memory'
    else:
        base_source = _base_file(model, state_dict, delta_source)
        base = to_dinov3_layout(
            extract_state_dict(read_checkpoint(base_source), base_source),
            layout)
        _check_sizes(
            {
                k[len(EOMT_BACKBONE):]: v
                for k, v in state_dict.items() if k.startswith(EOMT_BACKBONE)
            }, base, delta_source, base_source)
        check_state_dict(
            expected, base, base_source,
            f'{type(model.backbone).__name__}(arch='
            f'{getattr(model.backbone, "arch", "?")!r})')
    return apply_eomt_deltas(state_dict, base, delta_source, base_source)
