"""Checkpoints of frozen-backbone runs hold the head only, plus the backbone
file's name and SHA-256; resume, test and inference rebuild the backbone
from that file and refuse another one."""
import hashlib

import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.tools import REPO, check, run, write_config
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.frozen_backbone import frozen_backbone_keys
from dinov2_seg.models.backbones import DinoVisionTransformer


def backbone_file(path, seed):
    """A DINOv2 backbone file in Meta's layout (a plain state_dict)."""
    torch.manual_seed(seed)
    torch.save(DinoVisionTransformer(arch=TINY_ARCH).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def frozen_run(tmp_path_factory, shapes_root):
    """4 iterations with a frozen backbone loaded from a file,
    checkpoints every 2."""
    tmp = tmp_path_factory.mktemp('frozen')
    weights = backbone_file(tmp / 'backbone.pth', seed=1)
    config = write_config(
        tmp / 'frozen.py', shapes_root,
        f"model['backbone']['init_cfg'] = dict(type='Pretrained', "
        f"checkpoint={str(weights)!r})")
    work = tmp / 'work'
    check(
        run('tools/train.py', config, '--work-dir', work, '--cfg-options',
            'train_cfg.max_iters=4', 'default_hooks.checkpoint.interval=2'))
    return config, weights, work


@pytest.mark.slow
def test_checkpoint_holds_no_backbone_but_its_file_and_hash(frozen_run):
    _, weights, work = frozen_run
    checkpoint = torch.load(work / 'iter_4.pth', weights_only=False)
    keys = set(checkpoint['state_dict'])
    assert keys == {
        'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias',
        'decode_head.bn.weight', 'decode_head.bn.bias',
        'decode_head.bn.running_mean', 'decode_head.bn.running_var',
        'decode_head.bn.num_batches_tracked'
    }
    assert checkpoint['meta']['backbone_file'] == str(weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert checkpoint['meta']['backbone_sha256'] == digest
    # The optimizer state is kept for --resume (the head's tensors only).
    assert len(checkpoint['optimizer']['state']) == 4


@pytest.mark.slow
def test_resume_test_and_api_rebuild_the_backbone(frozen_run, tmp_path):
    config, weights, work = frozen_run
    log = check(
        run('tools/train.py', config, '--work-dir', work, '--resume',
            '--verbose', '--cfg-options', 'train_cfg.max_iters=6',
            'default_hooks.checkpoint.interval=2'))
    assert 'resumed' in log.lower() and 'Iter(train) [6/6]' in log
    assert 'Iter(train) [1/6]' not in log
    head_before = torch.load(work / 'iter_4.pth', weights_only=False)
    head_after = torch.load(work / 'iter_6.pth', weights_only=False)
    assert not torch.equal(
        head_before['state_dict']['decode_head.conv_seg.weight'],
        head_after['state_dict']['decode_head.conv_seg.weight'])
    assert 'mIoU' in check(
        run('tools/test.py', config, work / 'iter_6.pth', '--work-dir',
            tmp_path))
    # The Python API (and tools/inference.py through it) loads the backbone
    # tensors of the file and the head of the checkpoint.
    cfg = Config.fromfile(str(config))
    model = MODELS.build(cfg.model)
    load_segmentor_checkpoint(model, str(work / 'iter_6.pth'))
    state = model.state_dict()
    for key, value in torch.load(weights).items():
        assert torch.equal(state[f'backbone.{key}'], value), key
    for key, value in head_after['state_dict'].items():
        assert torch.equal(state[key], value), key


@pytest.mark.slow
def test_another_backbone_file_is_refused(frozen_run, tmp_path):
    config, weights, work = frozen_run
    other = backbone_file(tmp_path / 'other.pth', seed=2)
    result = run('tools/test.py', config, work / 'iter_4.pth', '--work-dir',
                 tmp_path, '--cfg-options',
                 f'model.backbone.init_cfg.checkpoint={other}')
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(weights) in message and str(other) in message
    assert 'different file' in message
    latest = (work / 'last_checkpoint').read_text().strip()
    result = run('tools/train.py', config, '--work-dir', work, '--resume',
                 '--cfg-options',
                 f'model.backbone.init_cfg.checkpoint={other}',
                 'train_cfg.max_iters=8')
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert str(other) in message and latest in message
    assert not (work / 'iter_8.pth').exists()


@pytest.mark.slow
def test_fine_tuned_backbone_is_saved_whole(tmp_path, shapes_root):
    weights = backbone_file(tmp_path / 'backbone.pth', seed=1)
    config = write_config(
        tmp_path / 'finetune.py', shapes_root,
        f"model['backbone'].update(frozen=False, init_cfg=dict("
        f"type='Pretrained', checkpoint={str(weights)!r}))")
    check(
        run('tools/train.py', config, '--work-dir', tmp_path / 'work',
            '--cfg-options', 'train_cfg.max_iters=2',
            'default_hooks.checkpoint.interval=2'))
    checkpoint = torch.load(
        tmp_path / 'work' / 'iter_2.pth', weights_only=False)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in checkpoint['state_dict'].items()
        if k.startswith('backbone.')
    }
    assert set(backbone) == set(torch.load(weights))
    assert 'backbone_sha256' not in checkpoint['meta']
    # It trained: the blocks moved away from the file.
    assert not torch.equal(backbone['blocks.0.attn.qkv.weight'],
                           torch.load(weights)['blocks.0.attn.qkv.weight'])


def test_vitg14_linear_checkpoint_is_under_one_percent_of_the_model():
    """What the checkpoints of the ViT-g linear recipe keep, counted on the
    meta device (no 4.4 GB of weights): the head, and AdamW's two moments
    of it."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vitg14_linear.py'))
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    dropped = set(frozen_backbone_keys(model))
    state = model.state_dict()
    assert dropped == {k for k in state if k.startswith('backbone.')}
    whole = sum(v.numel() * v.element_size() for v in state.values())
    kept = sum(v.numel() * v.element_size() for k, v in state.items()
               if k not in dropped)
    moments = 2 * sum(p.numel() * p.element_size()
                      for p in model.parameters() if p.requires_grad)
    # BN (4 x 1536 + 1) and a 150 x 1536 conv: 0.9 MB of a 4.4 GB model.
    assert whole > 4.4e9
    assert kept + moments < 0.01 * whole
