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
from helpers.tools import (REPO, assert_every_scale_and_flip, check,
                           miou_percent, predictions_miou, reported_miou, run,
                           run_test_tool_recording_views, shapes_labels,
                           write_config)
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.datasets import SHAPES_CLASSES

# Every test runs a tool in a subprocess.
pytestmark = pytest.mark.slow


def save_model(config: Path, path: Path, values: dict = None) -> Path:
    """A whole-model checkpoint of the config's randomly initialised
    model, with the given tensors set to the given values."""
    torch.manual_seed(0)
    state = MODELS.build(Config.fromfile(str(config)).model).state_dict()
    with torch.no_grad():
        for key, value in (values or {}).items():
            state[key].copy_(torch.as_tensor(value))
    torch.save(dict(state_dict=state, meta={}), path)
    return path


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
    for cls in SHAPES_CLASSES:
        assert re.search(rf'\|\s+{cls}\s+\|\s+(nan|[\d.]+)\s+\|', log), cls
    metrics = json.loads(
        sorted(work.glob('*/*.json'))[-1].read_text().splitlines()[-1])

    labels = shapes_labels(shapes_root)
    written = sorted(preds.glob('*.png'))
    assert [p.stem for p in written] == sorted(labels)
    # Written in the dataset's own label encoding (reduce_zero_label: +1).
    assert all(
        set(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED))) <= set(
            range(1, 6)) for p in written)
    # The reported mIoU is that of the written predictions.
    want = predictions_miou(preds, labels)
    assert metrics['mIoU'] == pytest.approx(want, abs=0.01)
    assert reported_miou(log) == pytest.approx(want, abs=0.01)
    painted = sorted((work / 'vis').rglob('*.png'))
    assert len(painted) == 4
    assert cv2.imread(str(painted[0])).shape[1] == 2 * labels['v0000'].shape[1]


def test_known_miou_of_a_constant_prediction(tmp_path, config, shapes_root):
    """A model that predicts "ground" everywhere (zero classifier weights,
    one positive bias) scores what the labels alone say: ground's IoU is
    its share of the labelled pixels, every other class present scores 0."""
    ground = SHAPES_CLASSES.index('ground')
    head = {
        'decode_head.conv_seg.weight': 0,
        'decode_head.conv_seg.bias': torch.eye(len(SHAPES_CLASSES))[ground]
    }
    checkpoint = save_model(config, tmp_path / 'ground.pth', head)
    log = check(
        run('tools/test.py', config, checkpoint, '--work-dir',
            tmp_path / 'work'))

    labels = list(shapes_labels(shapes_root).values())
    valid = sum((label != 255).sum() for label in labels)
    ground_share = sum((label == ground).sum() for label in labels) / valid
    want = miou_percent(
        ((np.full_like(label, ground), label) for label in labels),
        len(SHAPES_CLASSES))
    assert 0 < want < ground_share * 100  # other classes are present
    assert reported_miou(log) == pytest.approx(want, abs=0.01)
    accuracy = float(re.search(r'aAcc: ([\d.]+)', log).group(1))
    assert accuracy == pytest.approx(100 * ground_share, abs=0.01)
    row = re.search(r'\|\s+ground\s+\|\s+([\d.]+)\s+\|', log)
    assert float(row.group(1)) == pytest.approx(100 * ground_share, abs=0.01)


def test_multi_scale_flip_tta_runs_every_view(tmp_path, shapes_root):
    """--tta gives the model each image at every scale, unflipped and
    mirrored, and slides over each view."""
    extra = """
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(448 * r), int(224 * r)),
              keep_ratio=True) for r in (1.0, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='DinoLoadAnnotations')],
        [dict(type='PackSegInputs')]])]
"""
    config = write_config(tmp_path / 'tta.py', shapes_root, extra)
    checkpoint = save_model(config, tmp_path / 'model.pth')
    log, record = run_test_tool_recording_views(tmp_path, config, checkpoint,
                                                '--work-dir',
                                                tmp_path / 'work', '--tta')
    assert re.search(r'mIoU: [\d.]+', log)
    # 90x125 images; keep-ratio resizes to short side 224 and 336.
    assert_every_scale_and_flip(record, [(224, 311), (336, 467)], images=4)
    # Windows of 224 at stride 149: 1 x 2 at the first scale, 2 x 3 at the
    # second, for 2 flips of 4 images.
    assert sum(record['backbone_images']) == 4 * 2 * (1 * 2 + 2 * 3)


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
    # The head's SyncBN (no CPU kernel) runs as BN, per process.
    assert 'SyncBN layers run as BN' in log
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
