"""Running the tools as a user does and reading what they print or write."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .archs import TINY_ARCH

REPO = Path(__file__).resolve().parents[2]


def run(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python ARGS...`` from the repository root, as a user runs the
    tools. A run past ``timeout`` seconds (below pytest's 900 s) is killed
    and returned with exit status 124 and what it printed, so that
    :func:`check` reports a hung tool with its output."""
    command = [sys.executable, *map(str, args)]
    try:
        return subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:

        def text(value) -> str:
            if isinstance(value, bytes):
                return value.decode(errors='replace')
            return value or ''

        return subprocess.CompletedProcess(
            command, 124, text(expired.stdout),
            text(expired.stderr) + f'\n[killed after {timeout} s]')


def check(result: subprocess.CompletedProcess) -> str:
    """The output of a run that must have succeeded."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def miou_percent(pairs, num_classes: int) -> float:
    """mIoU in percent, rounded as mmseg prints it, of (prediction, label)
    class-index arrays with 255 ignored: intersections and unions summed over
    the images per class, classes in neither left out of the mean."""
    intersection = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, label in pairs:
        valid = label != 255
        for cls in range(num_classes):
            predicted, labelled = (pred == cls) & valid, (label == cls) & valid
            intersection[cls] += (predicted & labelled).sum()
            union[cls] += (predicted | labelled).sum()
    with np.errstate(invalid='ignore'):
        return round(float(np.nanmean(intersection / union)) * 100, 2)


def reported_miou(log: str) -> float:
    """The mIoU that tools/test.py printed."""
    return float(re.search(r'mIoU: ([\d.]+)', log).group(1))


def predictions_miou(pred_dir: Path,
                     labels: dict,
                     num_classes: int = 5) -> float:
    """mIoU of the label PNGs that ``tools/test.py --out`` wrote for the
    shapes data (its encoding: class + 1) against ``labels``, for a model
    of ``num_classes`` classes (the shapes data's 5 by default)."""
    import cv2
    written = {p.stem: p for p in pred_dir.glob('*.png')}
    assert sorted(written) == sorted(labels)
    pairs = [
        (cv2.imread(str(written[k]), cv2.IMREAD_UNCHANGED).astype(np.int64) -
         1, labels[k]) for k in labels
    ]
    return miou_percent(pairs, num_classes)


def shapes_labels(root: Path, split: str = 'validation') -> dict:
    """The shapes data's label maps as class indices (file value - 1; the
    outlines, 0 in the files, become 255), by file stem."""
    import cv2
    labels = {}
    for path in sorted((root / 'annotations' / split).glob('*.png')):
        value = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        labels[path.stem] = np.where(value == 0, 255, value - 1)
    return labels


# tools/test.py in-process with every view the model is given recorded:
# the images after the test pipeline (as the data preprocessor receives
# them, with their flip flag) and the batch size of every backbone call.
_RECORD_VIEWS = """
import sys
import torch
from dinov2_seg.cli.test import main
from dinov2_seg.models.backbones import DinoViTBase
from mmseg.models.data_preprocessor import SegDataPreProcessor
views, backbone_images = [], []


def record(module, args):
    if isinstance(module, SegDataPreProcessor):
        data = args[0]
        for image, sample in zip(data['inputs'], data['data_samples']):
            views.append((sample.img_path, bool(sample.flip), image.clone()))
    elif isinstance(module, DinoViTBase):
        backbone_images.append(args[0].shape[0])


torch.nn.modules.module.register_module_forward_pre_hook(record)
main(sys.argv[2:])
torch.save(dict(views=views, backbone_images=backbone_images), sys.argv[1])
"""


def run_test_tool_recording_views(tmp_path: Path, *args) -> tuple:
    """``tools/test.py ARGS`` (in a subprocess): its output, and a record of
    the ``views`` (image path, flip, image) and ``backbone_images``."""
    log = check(run('-c', _RECORD_VIEWS, tmp_path / 'views.pt', *args))
    return log, torch.load(tmp_path / 'views.pt', weights_only=False)


def assert_every_scale_and_flip(record: dict, sizes, images: int) -> None:
    """Each of ``images`` images was seen at every (h, w) of ``sizes``,
    once as it is and once mirrored, and nothing else."""
    views = {}
    for path, flip, image in record['views']:
        views.setdefault(path, []).append((flip, image))
    assert len(views) == images
    for path, image_views in views.items():
        assert len(image_views) == 2 * len(sizes), path
        for size in sizes:
            pair = {
                flip: image
                for flip, image in image_views
                if tuple(image.shape[1:]) == tuple(size)
            }
            assert set(pair) == {False, True}, (path, size)
            assert torch.equal(pair[True], pair[False].flip(-1))


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
