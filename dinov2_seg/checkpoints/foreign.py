"""Convert DINOv2 backbone weights from timm's and Hugging Face's layouts to
Meta's, so that files users already have cached load like the official ones.

Pure functions from one state_dict to another.
"""
import re
from typing import Dict, Mapping

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]

# transformers Dinov2Model / Dinov2WithRegistersModel, as saved on the Hub
# (and by save_pretrained) ...
_HF_RENAMES = [
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.mask_token$', 'mask_token'),
    (r'^embeddings\.register_tokens$', 'register_tokens'),
    (r'^embeddings\.position_embeddings$', 'pos_embed'),
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^encoder\.layer\.(\d+)\.attention\.output\.dense\.',
     r'blocks.\1.attn.proj.'),
    (r'^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$',
     r'blocks.\1.ls\2.gamma'),
    (r'^encoder\.layer\.(\d+)\.mlp\.weights_in\.', r'blocks.\1.mlp.w12.'),
    (r'^encoder\.layer\.(\d+)\.mlp\.weights_out\.', r'blocks.\1.mlp.w3.'),
    (r'^encoder\.layer\.(\d+)\.mlp\.down_proj\.', r'blocks.\1.mlp.w3.'),
    (r'^encoder\.layer\.(\d+)\.attention\.o_proj\.', r'blocks.\1.attn.proj.'),
    (r'^encoder\.layer\.(\d+)\.', r'blocks.\1.'),
    (r'^layernorm\.', 'norm.'),
]
# ... whose attention has separate q/k/v projections (named query/key/value
# on disk, q_proj/k_proj/v_proj in transformers>=5 modules) and whose
# SwiGLU may be split into gate/up projections.
_HF_QKV = re.compile(r'^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?'
                     r'(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$')
_HF_GATE_UP = re.compile(
    r'^encoder\.layer\.(\d+)\.mlp\.(gate_proj|up_proj)\.(weight|bias)$')


def is_huggingface_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith('embeddings.') for k in state_dict)


def is_timm_layout(state_dict: Mapping[str, Tensor]) -> bool:
    # timm drops the (unused) mask token and renames the registers.
    return 'reg_token' in state_dict or ('cls_token' in state_dict
                                         and 'mask_token' not in state_dict)


def convert_huggingface(state_dict: Mapping[str, Tensor]) -> StateDict:
    """transformers' Dinov2Model / Dinov2WithRegistersModel -> Meta's."""
    converted, qkv, gate_up = {}, {}, {}
    for key, value in state_dict.items():
        match = _HF_QKV.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part[0]] = value
            continue
        match = _HF_GATE_UP.match(key)
        if match:
            block, part, kind = match.groups()
            gate_up.setdefault((block, kind), {})[part[:2]] = value
            continue
        new_key = key
        for pattern, replacement in _HF_RENAMES:
            new_key, count = re.subn(pattern, replacement, new_key)
            if count:
                break
        converted[new_key] = value
    for (block, kind), parts in qkv.items():
        converted[f'blocks.{block}.attn.qkv.{kind}'] = torch.cat(
            [parts['q'], parts['k'], parts['v']])
    for (block, kind), parts in gate_up.items():
        # Meta's fused w12 is [gate; value], split in half at run time.
        converted[f'blocks.{block}.mlp.w12.{kind}'] = torch.cat(
            [parts['ga'], parts['up']])
    return converted


def convert_timm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """timm's vit_*_patch14[_reg4]_dinov2 -> Meta's.

    timm folds the class token's position embedding into ``cls_token`` for
    the register models (its pos_embed covers patches only); putting a zero
    row back in front gives the same sum, hence the same features.
    """
    converted = dict(state_dict)
    dim = converted['cls_token'].shape[-1]
    if 'reg_token' in converted:
        converted['register_tokens'] = converted.pop('reg_token')
        pos_embed = converted['pos_embed']
        converted['pos_embed'] = torch.cat(
            [pos_embed.new_zeros(1, 1, dim), pos_embed], 1)
    converted.setdefault('mask_token',
                         converted['cls_token'].new_zeros(1, dim))
    for key in list(converted):
        match = re.match(r'^blocks\.(\d+)\.mlp\.fc1\.weight$', key)
        if not match:
            continue
        fc2 = converted[f'blocks.{match.group(1)}.mlp.fc2.weight']
        if converted[key].shape[0] == 2 * fc2.shape[1]:  # packed SwiGLU
            for kind in ('weight', 'bias'):
                prefix = f'blocks.{match.group(1)}.mlp.'
                converted[prefix +
                          f'w12.{kind}'] = converted.pop(prefix +
                                                         f'fc1.{kind}')
                converted[prefix + f'w3.{kind}'] = converted.pop(prefix +
                                                                 f'fc2.{kind}')
    return converted


def to_official_layout(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Return ``state_dict`` in Meta's layout, converting timm's and Hugging
    Face's; Meta's own files pass through unchanged."""
    if is_huggingface_layout(state_dict):
        return convert_huggingface(state_dict)
    if is_timm_layout(state_dict):
        return convert_timm(state_dict)
    return dict(state_dict)
