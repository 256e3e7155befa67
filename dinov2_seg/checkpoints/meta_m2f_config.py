"""Compare Meta's ``dinov2_vitg14_ade20k_m2f_config.py`` with our official
Mask2Former config, setting by setting.

Several hyper-parameters of Meta's model (attention heads, sampling points,
test resolution) leave no trace in the checkpoint's shapes, so loading the
file cannot confirm them; Meta's config, published next to it, can. It is an
mmseg 0.x config (mmcv 1.x transformer-layer syntax), read here as plain
Python with mmengine.
"""
from typing import Any, List, Sequence, Tuple

from mmengine.config import Config

from dinov2_seg.arch_settings import resolve_arch

_MISSING = object()


def _get(node: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; for lists of layer
    configs (mmcv 1.x ``attn_cfgs``/``ffn_cfgs`` may be one dict or a list)
    a name is looked up in the first element."""
    for name in path.split('.'):
        if isinstance(node, (list, tuple)) and not name.isdigit():
            node = node[0] if node else _MISSING
        if isinstance(node, (list, tuple)) and name.isdigit():
            index = int(name)
            node = node[index] if index < len(node) else _MISSING
        elif isinstance(node, dict):
            node = node.get(name, _MISSING)
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _first(node: Any, paths: Sequence[str]) -> Any:
    for path in paths:
        value = _get(node, path)
        if value is not _MISSING:
            return value
    return _MISSING


def _test_resize(pipeline: Any) -> Any:
    """The test resolution: mmseg 0.x ``MultiScaleFlipAug.img_scale`` or a
    1.x ``Resize.scale``."""
    for step in pipeline or []:
        if step.get('type') == 'MultiScaleFlipAug':
            return tuple(step['img_scale'])
        if step.get('type') == 'Resize' and 'scale' in step:
            return tuple(step['scale'])
    return _MISSING


def _size_divisor(pipeline: Any) -> Any:
    for step in pipeline or []:
        if step.get('type') == 'ResizeToMultiple':
            return step.get('size_divisor')
        if step.get('type') == 'MultiScaleFlipAug':
            found = _size_divisor(step.get('transforms'))
            if found is not _MISSING:
                return found
    return _MISSING


def _official_test_pipeline(cfg: Config) -> Any:
    return _first(cfg, ['data.test.pipeline', 'test_pipeline'])


def _num_classes(cfg: dict) -> Any:
    things = _get(cfg, 'model.decode_head.num_things_classes')
    stuff = _get(cfg, 'model.decode_head.num_stuff_classes')
    if things is _MISSING or stuff is _MISSING:
        return _get(cfg, 'model.decode_head.num_classes')
    return things + stuff


# (setting, Meta's paths (first found wins), our path)
_ENC = 'model.decode_head.pixel_decoder.encoder'
_DEC = 'model.decode_head.transformer_decoder'
SETTINGS: List[Tuple[str, Sequence[str], str]] = [
    ('ViT width', ['model.backbone.embed_dim'], 'arch.embed_dim'),
    ('ViT depth', ['model.backbone.depth'], 'arch.depth'),
    ('ViT heads', ['model.backbone.num_heads'], 'arch.num_heads'),
    ('ViT FFN', ['model.backbone.ffn_type'], 'arch.ffn'),
    ('pretraining size (pos_embed grid)', ['model.backbone.pretrain_size'],
     'model.backbone.img_size'),
    ('patch size', ['model.backbone.patch_size'], 'model.backbone.patch_size'),
    ('interaction indexes', ['model.backbone.interaction_indexes'],
     'model.backbone.interaction_indexes'),
    ('deformable heads', ['model.backbone.deform_num_heads'],
     'model.backbone.deform_num_heads'),
    ('deformable points', ['model.backbone.n_points'],
     'model.backbone.num_points'),
    ('deformable value ratio', ['model.backbone.deform_ratio'],
     'model.backbone.deform_ratio'),
    ('conv FFN ratio', ['model.backbone.cffn_ratio'],
     'model.backbone.cffn_ratio'),
    ('spatial prior width', ['model.backbone.conv_inplane'],
     'model.backbone.conv_inplane'),
    ('injector gate init', ['model.backbone.init_values'],
     'model.backbone.gate_init'),
    ('add ViT features', ['model.backbone.add_vit_feature'],
     'model.backbone.add_vit_feature'),
    ('head input widths', ['model.decode_head.in_channels'],
     'model.decode_head.in_channels'),
    ('head width', ['model.decode_head.feat_channels'],
     'model.decode_head.feat_channels'),
    ('mask feature width', ['model.decode_head.out_channels'],
     'model.decode_head.out_channels'),
    ('queries', ['model.decode_head.num_queries'],
     'model.decode_head.num_queries'),
    ('decoder feature levels',
     ['model.decode_head.num_transformer_feat_level'
      ], 'model.decode_head.num_transformer_feat_level'),
    ('pixel decoder layers', [f'{_ENC}.num_layers'], f'{_ENC}.num_layers'),
    ('pixel decoder heads', [f'{_ENC}.transformerlayers.attn_cfgs.num_heads'],
     f'{_ENC}.layer_cfg.self_attn_cfg.num_heads'),
    ('pixel decoder points',
     [f'{_ENC}.transformerlayers.attn_cfgs.num_points'
      ], f'{_ENC}.layer_cfg.self_attn_cfg.num_points'),
    ('pixel decoder FFN', [
        f'{_ENC}.transformerlayers.ffn_cfgs.feedforward_channels',
        f'{_ENC}.transformerlayers.feedforward_channels'
    ], f'{_ENC}.layer_cfg.ffn_cfg.feedforward_channels'),
    ('positional features',
     ['model.decode_head.pixel_decoder.positional_encoding.num_feats'
      ], 'model.decode_head.pixel_decoder.positional_encoding.num_feats'),
    ('decoder layers', [f'{_DEC}.num_layers'], f'{_DEC}.num_layers'),
    ('decoder heads', [f'{_DEC}.transformerlayers.attn_cfgs.num_heads'],
     f'{_DEC}.layer_cfg.self_attn_cfg.num_heads'),
    ('decoder FFN', [
        f'{_DEC}.transformerlayers.ffn_cfgs.feedforward_channels',
        f'{_DEC}.transformerlayers.feedforward_channels'
    ], f'{_DEC}.layer_cfg.ffn_cfg.feedforward_channels'),
    ('test mode', ['model.test_cfg.mode'], 'model.test_cfg.mode'),
    ('slide crop', ['model.test_cfg.crop_size'], 'model.test_cfg.crop_size'),
    ('slide stride', ['model.test_cfg.stride'], 'model.test_cfg.stride'),
]


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(v) for v in value)
    return value


def compare_m2f_configs(official: Config, ours: Config) -> List[dict]:
    """One row per setting: ``name``, ``official``, ``ours``, ``same``."""
    official = official.to_dict()
    ours_view = ours.to_dict()
    ours_view['arch'] = resolve_arch(ours.model.backbone.arch)
    rows = []
    for name, meta_paths, our_path in SETTINGS:
        rows.append(
            dict(
                name=name,
                official=_first(official, meta_paths),
                ours=_get(ours_view, our_path)))
    rows.append(
        dict(
            name='classes',
            official=_num_classes(official),
            ours=_get(ours_view, 'model.decode_head.num_classes')))
    official_pipeline = _official_test_pipeline(official)
    rows.append(
        dict(
            name='test resize',
            official=_test_resize(official_pipeline),
            ours=_test_resize(_get(ours_view, 'test_pipeline'))))
    rows.append(
        dict(
            name='test size divisor',
            official=_size_divisor(official_pipeline),
            ours=_size_divisor(_get(ours_view, 'test_pipeline'))))
    for row in rows:
        row['same'] = (
            row['official'] is not _MISSING
            and _normalise(row['official']) == _normalise(row['ours']))
    return rows


def show_setting(value: Any) -> str:
    """A setting as the comparison prints it ('not found' if absent)."""
    return 'not found' if value is _MISSING else repr(_normalise(value))
