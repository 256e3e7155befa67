"""Sharded training (FSDP, configs/_base_/fsdp.py) of the DINOv3 7B
architecture: 2 CPU processes on gloo against one unsharded process, and
resume.

The model is the 7B's block (SwiGLU with ratio 3 aligned to 64, no qkv
bias, 4 storage tokens, head dim 128) at depth 2 and width 256 (2 heads):
at the full width of 4096 one block holds about 170 M parameters, i.e.
about 2.7 GB per process with gradients and AdamW's state, too much for
the shared 2-core test machines; width does not change what is sharded
or how.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tools import REPO, check, run
from mmengine.config import Config
from mmseg.registry import MODELS
from torch import nn

from dinov2_seg.arch_settings import DINOV3_ARCH_SETTINGS
from dinov2_seg.engine.sharded import (DinoFullyShardedDataParallel,
                                       dino_block_checkpoint_check,
                                       dino_block_wrap_policy)
from dinov2_seg.models.backbones.dinov3_layers import Block

TINY_7B = dict(
    DINOV3_ARCH_SETTINGS['vit7b16'], depth=2, embed_dim=256, num_heads=2)

# A hook that logs the loss averaged over the processes (mmengine logs
# rank 0's own), so that 2 x 1 image compares with 1 x 2 images, and the
# grad_norm that mmengine's logger reads from the message hub; with
# `reseed`, every iteration starts from the same torch seed on every
# process and in a one-process run, so that random draws in the losses
# (EoMT's point sampling) are the same where the images are.
LOSS_HOOK = """
import json
import os

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class GlobalLossHook(Hook):

    def __init__(self, reseed=False):
        self.reseed = reseed

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.reseed:
            torch.manual_seed(runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        loss = outputs['loss'].detach().clone().float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        record = dict(iter=runner.iter + 1, loss=loss.item())
        if 'train/grad_norm' in runner.message_hub.log_scalars:
            record['grad_norm'] = runner.message_hub.get_scalar(
                'train/grad_norm').current()
        if runner.rank == 0:
            with open(os.path.join(runner.work_dir, 'losses.jsonl'),
                      'a') as f:
                f.write(json.dumps(record) + '\\n')
"""


def write_sharded_config(tmp_path: Path, data_root: Path) -> Path:
    """The DINOv3 demo with configs/_base_/fsdp.py, the reduced 7B
    fine-tuned, and everything that differs between 2 x 1 and 1 x 2
    images switched off: a fixed resize instead of random crops and flips
    (each process draws its own), no dropout, GroupNorm instead of the
    head's BN (per-process statistics), and the same initial weights
    (``load_from``; FlexibleRunner builds the model later than Runner,
    after other draws from the seed)."""
    (tmp_path / 'global_loss_hook.py').write_text(LOSS_HOOK)
    path = tmp_path / 'tiny_7b_fsdp.py'
    path.write_text(f"""
_base_ = [{str(REPO / 'configs/dinov3/demo_shapes_vits16_linear.py')!r},
          {str(REPO / 'configs/_base_/fsdp.py')!r}]
size = (64, 64)
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='PackSegInputs')
]
loader = dict(num_workers=0, persistent_workers=False,
              dataset=dict(data_root={str(data_root)!r}, pipeline=pipeline))
train_dataloader = dict(loader, batch_size=2)
val_dataloader = None
val_cfg = None
val_evaluator = None
model = dict(
    data_preprocessor=dict(size=size),
    backbone=dict(arch=dict(_delete_=True, **{TINY_7B!r}), frozen=False),
    decode_head=dict(
        in_channels=[{TINY_7B['embed_dim']}],
        dropout_ratio=0.0,
        norm_cfg=dict(_delete_=True, type='GN', num_groups=8,
                      requires_grad=True)),
    test_cfg=dict(crop_size=size, stride=(48, 48)))
param_scheduler = [dict(type='DinoV3WarmupCosineLR', warmup_iters=2,
                        warmup_ratio=0.1, by_epoch=False, begin=0, end=6)]
train_cfg = dict(max_iters=6, val_interval=100)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, max_keep_ckpts=3))
custom_imports = dict(imports=_base_.custom_imports.imports +
                      ['global_loss_hook'])
custom_hooks = [dict(type='GlobalLossHook')]
load_from = {str(tmp_path / 'init.pth')!r}
randomness = dict(seed=0)
""")
    config = Config.fromfile(path, import_custom_modules=False)
    torch.manual_seed(0)
    model = MODELS.build(config.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'init.pth')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def train_two_processes(tmp_path: Path, config: Path, work: Path,
                        *args) -> str:
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    result = subprocess.run([
        'bash', 'tools/dist_train.sh', config, '2', '--work-dir', work,
        '--verbose', '--cfg-options', 'train_dataloader.batch_size=1', *args
    ],
                            cwd=REPO,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600)
    return check(result)


def losses(work: Path) -> dict:
    lines = (work / 'losses.jsonl').read_text().splitlines()
    return {r['iter']: r['loss'] for r in map(json.loads, lines)}


def train_one_process(tmp_path: Path, config: Path, work: Path, monkeypatch,
                      *args) -> None:
    """tools/train.py in this process (one process: mmengine's Runner)."""
    from dinov2_seg.cli.train import main
    monkeypatch.syspath_prepend(str(tmp_path))
    main([str(config), '--work-dir', str(work), *args])


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume(tmp_path, shapes_root):
    config = write_sharded_config(tmp_path, shapes_root)
    # One process, 2 images a step: mmengine's plain Runner (the strategy
    # needs a launcher; a warning says so).
    reference = tmp_path / 'reference'
    log = check(
        run(
            '-c', 'import sys; sys.path.insert(0, sys.argv.pop(1)); '
            'from dinov2_seg.cli.train import main; main(sys.argv[1:])',
            tmp_path, config, '--work-dir', reference))
    assert "strategy='DinoFSDPStrategy' needs a distributed launch" in log
    expected = losses(reference)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]

    # 2 processes, 1 image each, sharded; stopped after 4 iterations.
    sharded = tmp_path / 'sharded'
    log = train_two_processes(tmp_path, config, sharded,
                              'train_cfg.max_iters=4')
    assert 'FSDP: 2 transformer blocks sharded over 2 processes' in log
    assert 'FSDP: activation checkpointing of 2 blocks.' in log
    got = losses(sharded)
    assert sorted(got) == [1, 2, 3, 4]
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step
    # The checkpoint is consolidated on rank 0: one ordinary file with the
    # unsharded model's keys and shapes (tools/test.py reads it).
    saved = torch.load(sharded / 'iter_4.pth', weights_only=False)
    state = saved['state_dict']
    assert state['backbone.blocks.1.mlp.w1.weight'].shape[1] == 256
    assert not any('_fsdp' in k or '_checkpoint' in k for k in state)
    assert saved['meta']['iter'] == 4

    # Resumed: continues at iteration 5 with the reference's losses.
    # (load_from off: mmengine would resume from it instead of the latest)
    log = train_two_processes(tmp_path, config, sharded, 'load_from=None',
                              '--resume')
    assert 'resumed epoch: 0, iter: 4' in log
    got = losses(sharded)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step


def write_sharded_eomt_config(tmp_path: Path, data_root: Path) -> Path:
    """The DINOv3 EoMT demo with configs/_base_/fsdp.py on the reduced 7B,
    fine-tuned, saving each rank's shard ('local' checkpoints), with the
    recipe's gradient clipping (max_norm 0.01, far below the gradient's
    norm: every step clips).

    For a one-process reference, the data is one image (every process gets
    it each step: 2 x the image averages to the image's gradient), the
    torch seed is reset each iteration, and the weights start from a file.
    """
    (tmp_path / 'global_loss_hook.py').write_text(LOSS_HOOK)
    path = tmp_path / 'tiny_7b_eomt_fsdp.py'
    path.write_text(f"""
_base_ = [{str(REPO / 'configs/dinov3/demo_shapes_eomt.py')!r},
          {str(REPO / 'configs/_base_/fsdp.py')!r}]
size = (64, 64)
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='Resize', scale=size, keep_ratio=False),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(data_root)!r}, pipeline=pipeline, indices=1))
val_dataloader = None
val_cfg = None
val_evaluator = None
model = dict(
    data_preprocessor=dict(size=size),
    backbone=dict(arch=dict(_delete_=True, **{TINY_7B!r}), frozen=False),
    decode_head=dict(
        embed_dims={TINY_7B['embed_dim']}, num_blocks=1,
        mask_annealing=dict(_delete_=True, start_iters=[1], end_iters=[3])),
    test_cfg=dict(crop_size=size, stride=(48, 48)))
strategy = dict(state_dict_cfg='local')
train_cfg = dict(max_iters=4, val_interval=100)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, max_keep_ckpts=3))
custom_imports = dict(imports=_base_.custom_imports.imports +
                      ['global_loss_hook'])
custom_hooks = [*_base_.custom_hooks, dict(type='GlobalLossHook', reseed=True)]
# ('local' checkpoints cannot be load_from: the initial weights come from
# the model's init_cfg, applied after its parts' own initialisation)
model.update(init_cfg=dict(type='Pretrained',
                           checkpoint={str(tmp_path / 'init.pth')!r}))
""")
    config = Config.fromfile(path, import_custom_modules=False)
    assert config.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    torch.manual_seed(0)
    model = MODELS.build(dict(config.model, init_cfg=None))
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'init.pth')
    return path


def records(work: Path) -> dict:
    lines = (work / 'losses.jsonl').read_text().splitlines()
    return {r['iter']: r for r in map(json.loads, lines)}


@pytest.mark.slow
def test_fsdp_fine_tunes_eomt_with_clipping_and_resumes_from_local_shards(
        tmp_path, shapes_root, monkeypatch):
    """EoMT's recipe under FSDP equals it unsharded: its gradient norm
    clipping by the norm of the whole gradient (not each process's
    shard's), the logged grad_norm that norm, the losses the one-process
    run's, to 1e-6, before and after a resume.

    EoMT runs the last blocks itself (queries joined to the tokens), so
    each FSDP block unit must still gather its shard when EoMT calls it;
    'local' checkpoints hold torch's ShardedTensor records, which the
    weights-only loading must accept on resume."""
    config = write_sharded_eomt_config(tmp_path, shapes_root)
    work = tmp_path / 'work'
    log = train_two_processes(tmp_path, config, work)
    assert 'FSDP: 2 transformer blocks sharded over 2 processes' in log
    first = records(work)
    assert sorted(first) == [1, 2, 3, 4]
    for rank in (0, 1):
        assert (work / 'iter_4.pth' / f'rank{rank}.pth').is_file()

    log = train_two_processes(tmp_path, config, work, 'train_cfg.max_iters=6',
                              '--resume')
    assert 'resumed epoch: 0, iter: 4' in log
    got = records(work)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert (work / 'iter_6.pth' / 'rank1.pth').is_file()

    reference = tmp_path / 'reference'
    train_one_process(tmp_path, config, reference, monkeypatch,
                      '--cfg-options', 'train_cfg.max_iters=6')
    expected = records(reference)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        # Clipped: the recipe's max_norm is far below the norm.
        assert expected[step]['grad_norm'] > 100 * 0.01
        for key in ('loss', 'grad_norm'):
            assert got[step][key] == pytest.approx(
                expected[step][key], rel=1e-6, abs=1e-6), (step, key)
    print(
        'largest relative difference to one process:', {
            key:
            max(
                abs(got[i][key] - expected[i][key]) / abs(expected[i][key])
                for i in range(1, 7))
            for key in ('loss', 'grad_norm')
        })


def write_frozen_backbone_config(tmp_path: Path, data_root: Path) -> Path:
    """The sharded linear config with the reduced 7B frozen and loaded
    from a backbone file (a linear head trained on it under FSDP)."""
    config = Config.fromfile(
        write_sharded_config(tmp_path, data_root), import_custom_modules=False)
    torch.manual_seed(1)
    backbone = MODELS.build(dict(config.model.backbone, init_cfg=None))
    torch.save(backbone.state_dict(), tmp_path / 'backbone.pth')
    path = tmp_path / 'tiny_7b_frozen_fsdp.py'
    path.write_text(f"""
_base_ = ['./tiny_7b_fsdp.py']
model = dict(backbone=dict(
    frozen=True,
    init_cfg=dict(_delete_=True, type='Pretrained',
                  checkpoint={str(tmp_path / 'backbone.pth')!r})))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=False),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={str(data_root)!r},
                                    pipeline=test_pipeline))
train_cfg = dict(max_iters=2)
load_from = None
# (the sharded config's custom_hooks replace default_runtime.py's)
custom_hooks = [dict(type='FrozenBackboneCheckpointHook'),
                dict(type='GlobalLossHook')]
""")
    return path


@pytest.mark.slow
def test_fsdp_frozen_backbone_saves_the_head_tests_and_resumes(
        tmp_path, shapes_root, monkeypatch):
    """A frozen backbone loaded from a file, under FSDP: the checkpoints
    hold the head and the file's hash (the names that FSDP and activation
    checkpointing give the backbone's parameters mapped to the state
    dict's), tools/test.py reads them, --resume continues."""
    config = write_frozen_backbone_config(tmp_path, shapes_root)
    work = tmp_path / 'work'
    log = train_two_processes(tmp_path, config, work)
    assert 'FSDP: 2 transformer blocks sharded over 2 processes' in log
    saved = torch.load(work / 'iter_2.pth', weights_only=False)
    # The head (its GroupNorm keeps BNHead's name) and the backbone's
    # buffers, as an unsharded frozen-backbone run saves them.
    assert sorted(saved['state_dict']) == [
        'backbone.rope_embed.periods', 'decode_head.bn.bias',
        'decode_head.bn.weight', 'decode_head.conv_seg.bias',
        'decode_head.conv_seg.weight'
    ]
    assert saved['meta']['backbone_file'] == str(tmp_path / 'backbone.pth')

    from dinov2_seg.cli.test import main as test
    monkeypatch.syspath_prepend(str(tmp_path))
    metrics = test([
        str(config),
        str(work / 'iter_2.pth'), '--work-dir',
        str(tmp_path / 'test')
    ])
    assert 0 <= metrics['mIoU'] <= 100

    log = train_two_processes(tmp_path, config, work, 'train_cfg.max_iters=4',
                              '--resume')
    assert 'resumed epoch: 0, iter: 2' in log
    assert sorted(losses(work)) == [1, 2, 3, 4]
    resumed = torch.load(work / 'iter_4.pth', weights_only=False)
    assert sorted(resumed['state_dict']) == sorted(saved['state_dict'])
    # The head trained on after the resume.
    assert not torch.equal(
        resumed['state_dict']['decode_head.conv_seg.weight'],
        saved['state_dict']['decode_head.conv_seg.weight'])


def test_wrap_policy_and_checkpointing_pick_the_blocks():
    block = Block(64, 2, ffn='swiglu', ffn_ratio=3.0, swiglu_align=64)
    assert dino_block_wrap_policy(block, recurse=False, nonwrapped_numel=0)
    assert dino_block_checkpoint_check(block)
    assert not dino_block_wrap_policy(
        nn.Linear(2, 2), recurse=False, nonwrapped_numel=0)
    assert not dino_block_checkpoint_check(nn.Linear(2, 2))
    # recurse=True: FSDP asks whether to look inside; always.
    assert dino_block_wrap_policy(nn.Linear(2, 2), True, 0)


def test_model_without_transformer_blocks_is_refused():
    config = Config.fromfile(
        str(REPO / 'configs/dinov3/ade20k_convnext_tiny_linear.py'),
        import_custom_modules=False)
    config.model.backbone.init_cfg = None
    model = MODELS.build(config.model)
    # The check comes before any process group is needed.
    with pytest.raises(ValueError) as error:
        DinoFullyShardedDataParallel(model)
    message = str(error.value)
    assert 'DinoV3ConvNeXt has none' in message
    assert 'saves no memory' in message
    assert 'plain DDP' in message


def test_7b_eomt_fsdp_config_shards_the_fine_tuned_7b():
    config = Config.fromfile(
        str(REPO / 'configs/dinov3/ade20k_vit7b16_eomt_fsdp.py'),
        import_custom_modules=False)
    assert config.strategy.type == 'DinoFSDPStrategy'
    assert config.strategy.model_wrapper.auto_wrap_policy == \
        'dino_block_wrap_policy'
    assert config.strategy.activation_checkpointing.check_fn == \
        'dino_block_checkpoint_check'
    backbone = config.model.backbone
    assert (backbone.arch, backbone.frozen, backbone.with_cp) == \
        ('vit7b16', False, False)
    # The rest is the unsharded EoMT config's.
    plain = Config.fromfile(
        str(REPO / 'configs/dinov3/ade20k_vit7b16_eomt.py'),
        import_custom_modules=False)
    assert config.model.decode_head == plain.model.decode_head
    assert config.optim_wrapper == plain.optim_wrapper
    assert config.train_dataloader == plain.train_dataloader
    assert 'strategy' not in plain
