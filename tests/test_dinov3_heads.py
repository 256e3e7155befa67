"""Linear heads trained with Meta's DINOv3 segmentation code load as its
train.py writes them."""
import pytest
import torch
from helpers.tools import (REPO, check, predictions_miou, reported_miou, run,
                           shapes_labels)
from mmengine.config import Config
from mmseg.registry import MODELS
from test_dinov3_convnext import SMALL, fabricate

from dinov2_seg.checkpoints import load_segmentor_checkpoint

CONFIG = REPO / 'configs' / 'dinov3' / 'ade20k_convnext_tiny_linear.py'
WIDTH = SMALL['dims'][-1]


def fabricate_meta_head(path, channels, num_classes, extra=None):
    """``model_final.pth`` as dinov3/eval/segmentation/train.py saves it:
    ``model`` holds the FeatureDecoder's entries named
    ``segmentation_model.1.*`` (LinearHead: ``batchnorm_layer``, a
    SyncBatchNorm, and ``conv``, the 1x1 classifier), ``optimizer`` the
    AdamW state with WarmupOneCycleLR's group entries."""
    generator = torch.Generator().manual_seed(0)
    head = {
        'segmentation_model.1.batchnorm_layer.weight':
        1 + 0.1 * torch.randn(channels, generator=generator),
        'segmentation_model.1.batchnorm_layer.bias':
        0.1 * torch.randn(channels, generator=generator),
        'segmentation_model.1.batchnorm_layer.running_mean':
        0.1 * torch.randn(channels, generator=generator),
        'segmentation_model.1.batchnorm_layer.running_var':
        0.5 + torch.rand(channels, generator=generator),
        'segmentation_model.1.batchnorm_layer.num_batches_tracked':
        torch.tensor(40000),
        'segmentation_model.1.conv.weight':
        0.1 * torch.randn(num_classes, channels, 1, 1, generator=generator),
        'segmentation_model.1.conv.bias':
        0.1 * torch.randn(num_classes, generator=generator),
    }
    head.update(extra or {})
    params = [
        v for k, v in head.items() if 'running' not in k and 'num' not in k
    ]
    optimizer = dict(
        state={
            i:
            dict(
                step=torch.tensor(40000.),
                exp_avg=torch.zeros_like(p),
                exp_avg_sq=torch.zeros_like(p))
            for i, p in enumerate(params)
        },
        param_groups=[
            dict(
                lr=0.0,
                betas=(0.9, 0.999),
                eps=1e-8,
                weight_decay=1e-3,
                amsgrad=False,
                foreach=None,
                maximize=False,
                capturable=False,
                differentiable=False,
                fused=None,
                initial_lr=4e-5,
                max_lr=1e-3,
                min_lr=0.0,
                params=list(range(len(params))))
        ])
    torch.save(dict(model=head, optimizer=optimizer), path)
    return head


@pytest.fixture(scope='module')
def backbone_file(tmp_path_factory):
    """A reduced ConvNeXt in Meta's file layout."""
    path = tmp_path_factory.mktemp('ckpt') / 'dinov3_convnext_pretrain.pth'
    torch.save(fabricate(**SMALL), path)
    return path


def build(backbone_file):
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.arch = SMALL
    cfg.model.backbone.init_cfg.checkpoint = str(backbone_file)
    cfg.model.decode_head.in_channels = [WIDTH]
    return MODELS.build(cfg.model)


def test_meta_dinov3_head_loads_completely(tmp_path, backbone_file):
    path = tmp_path / 'model_final.pth'
    head = fabricate_meta_head(path, WIDTH, 150)
    model = build(backbone_file)
    load_segmentor_checkpoint(model, str(path))
    loaded = model.state_dict()
    renames = {
        'segmentation_model.1.batchnorm_layer.': 'decode_head.bn.',
        'segmentation_model.1.conv.': 'decode_head.conv_seg.'
    }
    for key, value in head.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        assert torch.equal(loaded[key], value), key
    backbone = torch.load(backbone_file)
    assert torch.equal(loaded['backbone.stages.3.0.gamma'],
                       backbone['stages.3.0.gamma'])


@pytest.mark.parametrize(
    'extra,named',
    [({
        'segmentation_model.1.extra.weight': torch.zeros(1)
    }, 'Unexpected keys (1): segmentation_model.1.extra.weight'),
     ({
         'segmentation_model.2.conv.weight': torch.zeros(1)
     }, 'Unexpected keys (1): segmentation_model.2.conv.weight')])
def test_foreign_key_is_named_with_the_file(tmp_path, backbone_file, extra,
                                            named):
    path = tmp_path / 'model_final.pth'
    fabricate_meta_head(path, WIDTH, 150, extra)
    with pytest.raises(ValueError) as err:
        load_segmentor_checkpoint(build(backbone_file), str(path))
    assert f'Checkpoint {path} does not fit' in str(err.value)
    assert named in str(err.value)


def test_head_without_batchnorm_is_reported(tmp_path, backbone_file):
    """Meta's LinearHead with use_batchnorm=False has no norm tensors."""
    path = tmp_path / 'model_final.pth'
    head = fabricate_meta_head(path, WIDTH, 150)
    torch.save(
        dict(model={
            k: v
            for k, v in head.items() if 'batchnorm' not in k
        }), path)
    with pytest.raises(
            ValueError, match=r'Missing keys \(5\): '
            'decode_head.bn.bias'):
        load_segmentor_checkpoint(build(backbone_file), str(path))


def test_class_count_mismatch_names_both_counts(tmp_path, backbone_file):
    path = tmp_path / 'model_final.pth'
    fabricate_meta_head(path, WIDTH, 21)
    with pytest.raises(
            ValueError, match='predicts 21 classes, the config 150'):
        load_segmentor_checkpoint(build(backbone_file), str(path))


@pytest.mark.slow
def test_tools_test_accepts_meta_dinov3_head(tmp_path, backbone_file,
                                             shapes_root):
    """`tools/test.py CONFIG model_final.pth`, the backbone file named in
    the config (here a reduced ConvNeXt through a config inheriting the
    DINOv3 one)."""
    head = tmp_path / 'model_final.pth'
    fabricate_meta_head(head, WIDTH, 150)
    config = tmp_path / 'reduced.py'
    config.write_text(
        f'_base_ = [{str(CONFIG)!r}]\n'
        f'model = dict(backbone=dict(arch=dict(_delete_=True, '
        f'depths={SMALL["depths"]}, '
        f'dims={SMALL["dims"]})), decode_head=dict(in_channels=[{WIDTH}]))\n')
    preds = tmp_path / 'preds'
    log = check(
        run('tools/test.py', config, head, '--work-dir', tmp_path / 'work',
            '--out', preds, '--cfg-options',
            f'model.backbone.init_cfg.checkpoint={backbone_file}',
            f'test_dataloader.dataset.data_root={shapes_root}',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', '--verbose'))
    assert 'Iter(test) [4/4]' in log
    assert reported_miou(log) == pytest.approx(
        predictions_miou(preds, shapes_labels(shapes_root), 150), abs=0.01)
