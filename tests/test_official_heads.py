"""Meta's released head files (mmcv 1.x checkpoints) load as published."""
import pytest
import torch
from helpers.fabricate import fabricate_head_file, fabricate_official_file
from helpers.tools import (REPO, check, predictions_miou, reported_miou, run,
                           shapes_labels)
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.checkpoints import load_segmentor_checkpoint


@pytest.fixture(scope='module')
def vits14_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'dinov2_vits14_pretrain.pth'
    state = fabricate_official_file('vits14', path)
    return path, state


def build(config, backbone_file=None):
    cfg = Config.fromfile(str(REPO / 'configs' / f'{config}.py'))
    if backbone_file is None:
        cfg.model.backbone.init_cfg = None
    else:
        cfg.model.backbone.init_cfg.checkpoint = str(backbone_file)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('config,levels', [('ade20k_vits14_linear', 1),
                                           ('ade20k_vits14_ms', 4)])
def test_head_file_and_backbone_file_load_completely(tmp_path, vits14_file,
                                                     config, levels):
    backbone_path, backbone_state = vits14_file
    head_path = tmp_path / 'dinov2_vits14_ade20k_head.pth'
    head_state = fabricate_head_file(head_path, 384, levels, 150)
    model = build(config, backbone_path)
    meta = load_segmentor_checkpoint(model, str(head_path))
    assert meta['mmcv_version'] == '1.5.0'
    loaded = model.state_dict()
    for name, value in head_state.items():
        assert torch.equal(loaded[name], value), name
    for name, value in backbone_state.items():
        assert torch.equal(loaded[f'backbone.{name}'], value), name


def test_class_count_mismatch_names_both_counts(tmp_path):
    head = tmp_path / 'dinov2_vits14_voc2012_linear_head.pth'
    fabricate_head_file(head, 384, 1, 21)
    model = build('ade20k_vits14_linear', 'unused.pth')
    with pytest.raises(ValueError) as err:
        load_segmentor_checkpoint(model, str(head))
    message = str(err.value)
    assert str(head) in message
    assert 'predicts 21 classes, the config 150' in message
    assert 'file has (21, 384, 1, 1), the model of this config expects ' \
        '(150, 384, 1, 1)' in message


@pytest.mark.parametrize('name,embed_dim,levels',
                         [('dinov2_vitb14_ade20k_linear_head.pth', 768, 1),
                          ('dinov2_vits14_ade20k_ms_head.pth', 384, 4)])
def test_head_of_another_size_or_recipe_is_named(tmp_path, name, embed_dim,
                                                 levels):
    """A ViT-B head, or an ms head (four levels), into the ViT-S linear
    config."""
    head = tmp_path / name
    fabricate_head_file(head, embed_dim, levels, 150)
    model = build('ade20k_vits14_linear', 'unused.pth')
    with pytest.raises(
            ValueError,
            match=f'head reads {embed_dim * levels} channels, the config 384'):
        load_segmentor_checkpoint(model, str(head))


def test_head_file_without_backbone_file_is_explained(tmp_path):
    head = tmp_path / 'head.pth'
    fabricate_head_file(head, 384, 1, 150)
    model = build('ade20k_vits14_linear', None)
    with pytest.raises(
            ValueError, match='holds no backbone weights.*backbone.init_cfg'):
        load_segmentor_checkpoint(model, str(head))


@pytest.mark.slow
def test_tools_test_accepts_meta_files(tmp_path, vits14_file, shapes_root):
    """`tools/test.py CONFIG HEAD.pth` with the backbone file beside it, as a
    user with Meta's downloads runs it."""
    head = tmp_path / 'dinov2_vits14_ade20k_linear_head.pth'
    fabricate_head_file(head, 384, 1, 150)
    preds = tmp_path / 'preds'
    log = check(
        run('tools/test.py', 'configs/ade20k_vits14_linear.py', head,
            '--work-dir', tmp_path / 'work', '--out', preds, '--cfg-options',
            f'model.backbone.init_cfg.checkpoint={vits14_file[0]}',
            f'test_dataloader.dataset.data_root={shapes_root}',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', '--verbose'))
    assert 'Iter(test) [4/4]' in log
    # Scored over ADE20K's 150 classes on the shapes labels (classes 0-4).
    assert reported_miou(log) == pytest.approx(
        predictions_miou(preds, shapes_labels(shapes_root), 150), abs=0.01)
