"""Where the project's classes are registered, and under which names:
every hook in engine/hooks and mmseg's HOOKS, names that cannot be taken for
(or replace) mmseg's own."""
import importlib
import pkgutil

from helpers.tools import REPO
from mmengine.hooks import Hook
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import HOOKS, MODELS, TRANSFORMS

import dinov2_seg

# Need extras (onnx, onnxruntime) that hold no hooks.
_OPTIONAL = ('dinov2_seg.deployment', 'dinov2_seg.cli.export_onnx')


def _import_package() -> None:
    for module in pkgutil.walk_packages(dinov2_seg.__path__, 'dinov2_seg.'):
        if not module.name.startswith(_OPTIONAL):
            importlib.import_module(module.name)


def _subclasses(cls: type) -> set:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_hook_lives_in_engine_hooks_and_mmseg_hooks():
    _import_package()
    hooks = {
        c
        for c in _subclasses(Hook) if c.__module__.startswith('dinov2_seg.')
    }
    assert len(hooks) >= 3
    for hook in hooks:
        assert hook.__module__.startswith('dinov2_seg.engine.hooks.'), hook
        # In mmseg's own table, the one the configs' default scope reads.
        assert HOOKS.module_dict.get(hook.__name__) is hook, hook
        assert hook.__name__ not in ROOT_HOOKS.module_dict, hook


def test_mmseg_load_annotations_stays_mmseg_s():
    import dinov2_seg.datasets  # noqa: F401
    assert TRANSFORMS.get('LoadAnnotations') is LoadAnnotations
    from dinov2_seg.datasets.transforms import DinoLoadAnnotations
    assert TRANSFORMS.get('DinoLoadAnnotations') is DinoLoadAnnotations


def _steps(pipeline):
    for step in pipeline or []:
        yield step
        for stage in step.get('transforms', []):
            yield from (stage if isinstance(stage, list) else [stage])


def test_project_configs_load_labels_with_the_project_transform():
    from mmengine.config import Config
    checked = 0
    for path in sorted((REPO / 'configs').glob('*.py')):
        cfg = Config.fromfile(str(path))
        for key in ('train_pipeline', 'test_pipeline', 'tta_pipeline'):
            types = [s['type'] for s in _steps(cfg.get(key))]
            assert 'LoadAnnotations' not in types, (path.name, key)
            checked += types.count('DinoLoadAnnotations')
    assert checked >= 40


def test_bn_head_is_registered_under_the_project_name():
    import dinov2_seg.models  # noqa: F401

    # mmseg 1.2 has no BNHead: the generic name stays free (or mmseg's).
    assert not (MODELS.get('BNHead')
                or object).__module__.startswith('dinov2_seg')
    from dinov2_seg.models.backbones import DinoViTAdapter
    from dinov2_seg.models.decode_heads import DinoBNHead
    assert MODELS.get('DinoBNHead') is DinoBNHead
    assert MODELS.get('DinoViTAdapter') is DinoViTAdapter
    assert MODELS.get('ViTAdapter') is None
