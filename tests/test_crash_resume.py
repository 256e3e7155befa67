"""A run killed at any moment loses nothing: tools/train.py is killed with
SIGKILL inside an iteration, while a checkpoint is being written and during
validation, resumed each time with ``--resume``, and ends with bitwise the
weights of an uninterrupted run. After every kill, ``last_checkpoint``
names a complete file and no file under a checkpoint's name is partial."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.tools import REPO

from dinov2_seg.checkpoints.safe_loading import load_weights_only
from dinov2_seg.cli.train import main as train_main
from dinov2_seg.datasets import generate_shapes_dataset

pytestmark = pytest.mark.slow  # four tools/train.py processes

# The shapes demo at a tiny size: a 4-block, 48-wide ViT, 56-pixel crops,
# 8 iterations of 2 images, a checkpoint every 2 (only the last kept, as
# the demo), validation every 4 on 2 images, loaders in the process.
CONFIG = '''
_base_ = [{base!r}]
custom_imports = dict(
    imports=['dinov2_seg.models', 'dinov2_seg.datasets',
             'dinov2_seg.evaluation', 'dinov2_seg.engine',
             'helpers.crash_points'],
    allow_failed_imports=False)
custom_hooks = [
    dict(type='FrozenBackboneCheckpointHook'), dict(type='CrashPointHook')]
crop_size = (56, 56)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='DinoLoadAnnotations'),
    dict(type='RandomResize', scale=(112, 56), ratio_range=(0.75, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(112, 56), keep_ratio=True),
    dict(type='DinoLoadAnnotations'),
    dict(type='PackSegInputs')
]
loader = dict(num_workers=0, persistent_workers=False,
              dataset=dict(data_root={data!r}))
train_dataloader = dict(
    loader, batch_size=2, dataset=dict(loader['dataset'],
                                       pipeline=train_pipeline))
val_dataloader = dict(loader, dataset=dict(loader['dataset'],
                                           pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict({arch!r}, _delete_=True)),
    decode_head=dict(in_channels=[{width}]),
    test_cfg=dict(crop_size=crop_size, stride=(37, 37)))
train_cfg = dict(max_iters=8, val_interval=4)
default_hooks = dict(
    logger=dict(interval=2), checkpoint=dict(interval=2, max_keep_ckpts=1))
'''


def write_config(tmp_path) -> str:
    data = tmp_path / 'shapes'
    generate_shapes_dataset(str(data), num_train=4, num_val=2, size=(60, 80))
    config = tmp_path / 'crash_shapes.py'
    config.write_text(
        CONFIG.format(
            base=str(REPO / 'configs' / 'demo_shapes_vits14_linear.py'),
            data=str(data),
            arch=TINY_ARCH,
            width=TINY_ARCH['embed_dim']))
    return str(config)


def train(config, work, crash: str = '', resume: bool = False) -> str:
    """tools/train.py CONFIG [--resume]; with ``crash``, SIGKILLed at that
    moment (see helpers/crash_points.py). Returns what it printed."""
    marker = work.parent / f'{crash.replace(":", "_")}.reached'
    log = work.parent / f'train_{crash.replace(":", "_") or "whole"}.log'
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',  # the same float sums in every run
        PYTHONPATH=os.pathsep.join(
            [str(REPO / 'tests'),
             str(REPO),
             os.environ.get('PYTHONPATH', '')]),
        DINOV2_SEG_CRASH_AT=crash,
        DINOV2_SEG_CRASH_MARKER=str(marker))
    command = [
        sys.executable, 'tools/train.py', config, '--work-dir',
        str(work)
    ] + (['--resume'] if resume else [])
    with open(log, 'w') as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while crash and not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f'never reached {crash}:\n' +
                            log.read_text()[-4000:])
            time.sleep(0.02)
        if crash:
            os.kill(process.pid, signal.SIGKILL)
        status = process.wait(timeout=400)
    output = log.read_text()
    if crash:
        assert status == -signal.SIGKILL, output[-4000:]
    else:
        assert status == 0, output[-4000:]
    return output


def weights(path) -> dict:
    return load_weights_only(str(path), map_location='cpu')['state_dict']


def assert_bitwise_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def assert_resumable(work) -> str:
    """``last_checkpoint`` names a file that loads whole, and every file
    named as a checkpoint loads; returns the named file."""
    named = (work / 'last_checkpoint').read_text().strip()
    assert os.path.isfile(named), named
    for path in work.glob('*.pth'):
        try:
            weights(path)
        except Exception as error:  # noqa: B902  (whatever torch raises)
            pytest.fail(f'{path.name} does not load (truncated?): {error!r}')
    return named


def test_killed_at_any_moment_resumes_to_the_same_weights(tmp_path):
    config = write_config(tmp_path)
    whole, work = tmp_path / 'whole', tmp_path / 'killed'
    # The uninterrupted run in this process (one interpreter start less),
    # on one thread as the killed ones: the same float sums.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_main([config, '--work-dir', str(whole)])
    finally:
        torch.set_num_threads(threads)
    want = weights(whole / 'iter_8.pth')

    # 1. Inside iteration 3 (index 3, the 4th): iter_2.pth is the last.
    train(config, work, crash='iteration:3')
    assert assert_resumable(work).endswith('iter_2.pth')

    # 2. Resumed from it, killed with iter_4.pth half written: nothing
    # under that name, the previous checkpoint still there and named.
    train(config, work, crash='checkpoint:4', resume=True)
    assert assert_resumable(work).endswith('iter_2.pth')
    partial = work / 'iter_4.pth.partial'  # killed while it was written
    assert partial.is_file() and not (work / 'iter_4.pth').exists()

    # 3. Resumed, killed during the validation after iteration 4 (its
    # checkpoint written): the leftover partial file is gone.
    train(config, work, crash='validation:4', resume=True)
    assert not partial.exists()
    assert assert_resumable(work).endswith('iter_4.pth')
    at_4 = weights(work / 'iter_4.pth')

    # 4. Resumed to the end: bitwise the weights of the uninterrupted run.
    log = train(config, work, resume=True)
    assert 'Auto resumed from' in log and 'iter_4.pth' in log, log[-3000:]
    got = weights(work / 'iter_8.pth')
    assert_bitwise_equal(got, want)
    # Not vacuous: iterations 5-8 changed the head.
    head = 'decode_head.conv_seg.weight'
    assert not torch.equal(got[head], at_4[head])
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_8.pth']
