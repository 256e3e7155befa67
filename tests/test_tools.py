"""tools/train.py and tools/test.py, run in subprocesses as a user runs
them."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, TINY_ARCH


def write_config(path: Path, data_root: Path, extra: str = '') -> Path:
    """A fork of the demo config with a tiny backbone and a 6-iteration
    schedule, as a user would write one."""
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'demo_shapes_vits14_linear.py')!r}]
data_root = {str(data_root)!r}
loader = dict(num_workers=0, persistent_workers=False,
              dataset=dict(data_root=data_root))
train_dataloader = dict(loader, batch_size=2)
val_dataloader = loader
test_dataloader = val_dataloader
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}]))
param_scheduler = [dict(type='PolyLR', power=1.0, by_epoch=False, begin=0,
                        end=6)]
train_cfg = dict(max_iters=6, val_interval=6)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=3, max_keep_ckpts=3))
randomness = dict(seed=0)
{extra}
""")
    return path


def run(*args, timeout=600):
    result = subprocess.run([sys.executable, *map(str, args)],
                            cwd=REPO,
                            capture_output=True,
                            text=True,
                            timeout=timeout)
    return result


def check(result):
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.fixture
def config(tmp_path, shapes_root):
    return write_config(tmp_path / 'tiny.py', shapes_root)


def test_train_then_test(tmp_path, config, shapes_root):
    work = tmp_path / 'work'
    log = check(run('tools/train.py', config, '--work-dir', work, '--verbose'))
    assert 'Iter(train) [6/6]' in log
    assert 'mIoU' in log
    assert (work / 'iter_6.pth').is_file()
    assert (work /
            'last_checkpoint').read_text().strip().endswith('iter_6.pth')

    preds = tmp_path / 'preds'
    log = check(
        run('tools/test.py', config, work / 'iter_6.pth', '--work-dir', work,
            '--out', preds, '--show-dir', 'vis'))
    assert 'per class results' in log
    for cls in ('sky', 'ground', 'disc', 'box', 'triangle'):
        assert re.search(rf'\|\s+{cls}\s+\|\s+(nan|[\d.]+)\s+\|', log), cls
    metrics = json.loads(
        sorted(work.glob('*/*.json'))[-1].read_text().splitlines()[-1])
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert 0 <= metrics['mIoU'] <= 100

    written = sorted(preds.glob('*.png'))
    assert [p.stem for p in written] == ['v0000', 'v0001', 'v0002', 'v0003']
    label = cv2.imread(
        str(shapes_root / 'annotations' / 'validation' / 'v0000.png'),
        cv2.IMREAD_UNCHANGED)
    pred = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert pred.shape == label.shape
    # Written in the dataset's own label encoding (reduce_zero_label: +1).
    assert set(np.unique(pred)) <= set(range(1, 6))
    painted = sorted((work / 'vis').rglob('*.png'))
    assert len(painted) == 4
    assert cv2.imread(str(painted[0])).shape[1] == 2 * label.shape[1]


def test_multi_scale_flip_tta(tmp_path, shapes_root):
    extra = """
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(448 * r), int(224 * r)),
              keep_ratio=True) for r in (1.0, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])]
"""
    config = write_config(tmp_path / 'tta.py', shapes_root, extra)
    work = tmp_path / 'work'
    check(
        run('tools/train.py', config, '--work-dir', work, '--cfg-options',
            'train_cfg.max_iters=3', 'train_cfg.val_interval=100'))
    log = check(
        run('tools/test.py', config, work / 'iter_3.pth', '--work-dir', work,
            '--tta'))
    assert 'mIoU' in log


def test_tta_on_a_linear_config_is_explained(tmp_path, config):
    result = run('tools/test.py', config, config, '--tta')
    assert result.returncode != 0
    assert 'defines no tta_pipeline' in result.stderr


def test_resume_continues_from_the_last_checkpoint(tmp_path, config):
    work = tmp_path / 'work'
    check(
        run('tools/train.py', config, '--work-dir', work, '--cfg-options',
            'train_cfg.max_iters=3', 'train_cfg.val_interval=100'))
    assert (work / 'iter_3.pth').is_file()
    log = check(
        run('tools/train.py', config, '--work-dir', work, '--resume',
            '--verbose'))
    assert 'resumed epoch: 0, iter: 3' in log
    assert 'Iter(train) [4/6]' in log
    assert 'Iter(train) [1/6]' not in log
    # The checkpoint holds numpy values and HistoryBuffers, which torch>=2.6
    # only loads with the project's allowlist.
    checkpoint = torch.load(work / 'iter_6.pth', weights_only=True)
    assert checkpoint['meta']['iter'] == 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_distributed_two_processes(tmp_path, config):
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    train = subprocess.run([
        'bash', 'tools/dist_train.sh', config, '2', '--work-dir', work,
        '--verbose'
    ],
                           cwd=REPO,
                           env=env,
                           capture_output=True,
                           text=True,
                           timeout=600)
    log = check(train)
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's wording for world size
    assert 'Iter(train) [6/6]' in log and 'mIoU' in log
    assert (work / 'iter_6.pth').is_file()
    log = check(
        run('-m',
            'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
            free_port(), 'tools/test.py', config, work / 'iter_6.pth',
            '--launcher', 'pytorch', '--work-dir', work))
    # 4 images split over 2 processes; the first one draws the bar and
    # prints the results, once.
    assert re.search(r'test .* 2/2 images', log)
    assert len(re.findall(r'^aAcc: [\d.]+  mIoU: [\d.]+', log, re.M)) == 1


def test_missing_dataset_stops_before_training(tmp_path):
    config = write_config(tmp_path / 'c.py', tmp_path / 'no_data')
    result = run('tools/train.py', config, '--work-dir', tmp_path / 'w')
    assert result.returncode != 0
    assert 'train_dataloader.dataset.data_root' in result.stderr
    assert 'images/training' in result.stderr
    assert not (tmp_path / 'w' / 'iter_3.pth').exists()


def test_missing_checkpoint_is_reported(tmp_path, config):
    result = run('tools/test.py', config, tmp_path / 'nope.pth')
    assert result.returncode != 0
    assert f'Checkpoint {tmp_path}/nope.pth does not exist' in result.stderr
