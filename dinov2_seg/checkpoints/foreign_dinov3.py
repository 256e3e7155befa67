"""Convert DINOv3 ViT weights from timm's and Hugging Face's layouts to
Meta's, so that ``DinoV3VisionTransformer`` loads them like Meta's files.

Pure functions from one state_dict to another. Both foreign layouts drop
tensors that Meta's files hold and that carry no learned information (the
RoPE periods, the key-bias mask, the unused mask token, the local-crop class
norm); they are rebuilt here from the target arch's settings (a dict of
``dinov2_seg.arch_settings.DINOV3_ARCH_SETTINGS``), which is why the
converters take it: the same timm state_dict would be ambiguous without it
(timm's ``vit_*_dinov3`` models have no qkv bias at all, Meta's files a
zero-masked one, except the 7B's).
"""
import re
from typing import Dict, Mapping

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]


def _periods(settings: Mapping) -> Tensor:
    quarter = settings['embed_dim'] // settings['num_heads'] // 4
    base = settings.get('rope_base', 100.0)
    # The expression of Meta's RopePositionEmbedding, in float32.
    return base**(torch.arange(quarter, dtype=torch.float32) / quarter)


def _key_bias_mask(bias: Tensor) -> Tensor:
    mask = torch.ones_like(bias)
    third = bias.shape[0] // 3
    mask[third:2 * third] = 0
    return mask


def _fill_meta_only(converted: StateDict, settings: Mapping) -> StateDict:
    """Add the tensors that the foreign layouts leave out: zero mask token,
    the RoPE periods, the key-bias masks (and a zero qkv bias where the
    source had none but Meta's arch has one), an identity local-crop
    class norm."""
    dim = settings['embed_dim']
    like = converted['cls_token']
    converted.setdefault('mask_token', like.new_zeros(1, dim))
    converted.setdefault('rope_embed.periods', _periods(settings))
    blocks = {
        int(m.group(1))
        for m in map(re.compile(r'^blocks\.(\d+)\.').match, converted) if m
    }
    for block in blocks:
        prefix = f'blocks.{block}.attn.qkv.'
        if settings.get('qkv_bias', True):
            bias = converted.setdefault(prefix + 'bias',
                                        like.new_zeros(3 * dim))
            converted.setdefault(prefix + 'bias_mask', _key_bias_mask(bias))
    if settings.get('local_cls_norm'):
        converted.setdefault('local_cls_norm.weight', like.new_ones(dim))
        converted.setdefault('local_cls_norm.bias', like.new_zeros(dim))
    return converted


# timm's Eva (``vit_*_patch16_dinov3[_qkvb]``) -> Meta's.
_TIMM_RENAMES = [
    (r'^reg_token$', 'storage_tokens'),
    (r'^blocks\.(\d+)\.gamma_1$', r'blocks.\1.ls1.gamma'),
    (r'^blocks\.(\d+)\.gamma_2$', r'blocks.\1.ls2.gamma'),
    (r'^blocks\.(\d+)\.mlp\.fc1_g\.', r'blocks.\1.mlp.w1.'),
    (r'^blocks\.(\d+)\.mlp\.fc1_x\.', r'blocks.\1.mlp.w2.'),
]
_TIMM_QV_BIAS = re.compile(r'^blocks\.(\d+)\.attn\.(q|k|v)_bias$')


def is_timm_dinov3_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return 'reg_token' in state_dict or 'blocks.0.gamma_1' in state_dict


def convert_timm_dinov3(state_dict: Mapping[str, Tensor],
                        settings: Mapping) -> StateDict:
    """timm's ``vit_*_patch16_dinov3[_qkvb]`` -> Meta's, for the arch
    ``settings``.

    timm splits the qkv bias into ``q_bias`` / ``v_bias`` (the key's is a
    fixed zero) and names SwiGLU's gate and value ``fc1_g`` / ``fc1_x``,
    its output ``fc2``.
    """
    converted, biases = {}, {}
    swiglu = any('.mlp.fc1_g.' in k for k in state_dict)
    for key, value in state_dict.items():
        match = _TIMM_QV_BIAS.match(key)
        if match:
            biases.setdefault(match.group(1), {})[match.group(2)] = value
            continue
        new_key = key
        for pattern, replacement in _TIMM_RENAMES:
            new_key = re.sub(pattern, replacement, new_key)
        if swiglu:
            new_key = re.sub(r'^blocks\.(\d+)\.mlp\.fc2\.',
                             r'blocks.\1.mlp.w3.', new_key)
        converted[new_key] = value
    for block, parts in biases.items():
        zeros = torch.zeros_like(parts['q'])
        converted[f'blocks.{block}.attn.qkv.bias'] = torch.cat(
            [parts['q'], parts.get('k', zeros), parts['v']])
    return _fill_meta_only(converted, settings)


# transformers' DINOv3ViTModel: ``layer.N.`` as saved by transformers 4.x
# (the Hub's files), ``model.layer.N.`` in transformers 5 modules.
_HF_RENAMES = [
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.register_tokens$', 'storage_tokens'),
    (r'^embeddings\.patch_embeddings\.', 'patch_embed.proj.'),
    (r'^(?:model\.)?layer\.(\d+)\.attention\.o_proj\.',
     r'blocks.\1.attn.proj.'),
    (r'^(?:model\.)?layer\.(\d+)\.layer_scale(\d)\.lambda1$',
     r'blocks.\1.ls\2.gamma'),
    (r'^(?:model\.)?layer\.(\d+)\.mlp\.gate_proj\.', r'blocks.\1.mlp.w1.'),
    (r'^(?:model\.)?layer\.(\d+)\.', r'blocks.\1.'),
]
_HF_QKV = re.compile(r'^(?:model\.)?layer\.(\d+)\.attention\.(q|k|v)_proj\.'
                     r'(weight|bias)$')
_HF_MLP = re.compile(r'^blocks\.(\d+)\.mlp\.(up_proj|down_proj)\.(\w+)$')


def is_huggingface_dinov3_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith('embeddings.') for k in state_dict)


def convert_huggingface_dinov3(state_dict: Mapping[str, Tensor],
                               settings: Mapping) -> StateDict:
    """transformers' ``DINOv3ViTModel`` -> Meta's, for the arch ``settings``.

    transformers keeps q/k/v as separate projections (the key without a
    bias), the mask token as (1, 1, D), and names the FFN
    ``up_proj``/``down_proj`` (plus ``gate_proj`` for SwiGLU: Meta's ``w1``;
    its ``up_proj`` is then ``w2``).
    """
    converted, qkv = {}, {}
    swiglu = any('.mlp.gate_proj.' in k for k in state_dict)
    for key, value in state_dict.items():
        match = _HF_QKV.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part] = value
            continue
        if key == 'embeddings.mask_token':
            converted['mask_token'] = value.reshape(1, -1)
            continue
        new_key = key
        for pattern, replacement in _HF_RENAMES:
            new_key, count = re.subn(pattern, replacement, new_key)
            if count:
                break
        match = _HF_MLP.match(new_key)
        if match:
            block, name, kind = match.groups()
            target = {
                'up_proj': 'w2' if swiglu else 'fc1',
                'down_proj': 'w3' if swiglu else 'fc2'
            }[name]
            new_key = f'blocks.{block}.mlp.{target}.{kind}'
        converted[new_key] = value
    for (block, kind), parts in qkv.items():
        if kind == 'bias':
            zeros = torch.zeros_like(next(iter(parts.values())))
            parts = {p: parts.get(p, zeros) for p in 'qkv'}
        converted[f'blocks.{block}.attn.qkv.{kind}'] = torch.cat(
            [parts['q'], parts['k'], parts['v']])
    return _fill_meta_only(converted, settings)


def to_dinov3_layout(state_dict: Mapping[str, Tensor],
                     settings: Mapping) -> StateDict:
    """Return ``state_dict`` in Meta's DINOv3 layout for the arch
    ``settings``, converting timm's and Hugging Face's; Meta's own files
    pass through unchanged."""
    if is_huggingface_dinov3_layout(state_dict):
        return convert_huggingface_dinov3(state_dict, settings)
    if is_timm_dinov3_layout(state_dict):
        return convert_timm_dinov3(state_dict, settings)
    return dict(state_dict)
