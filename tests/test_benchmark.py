"""The benchmark tool: live-tensor accounting, the compared modes and the
results file."""
import json
import math

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.tools import REPO
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS

from dinov2_seg.benchmark.dataset import mixed_sizes, write_eval_folder
from dinov2_seg.benchmark.flops import backbone_flops
from dinov2_seg.benchmark.memory import LiveTensorBytes
from dinov2_seg.cli.benchmark import main
from dinov2_seg.models.backbones import DinoVisionTransformer


def tiny_config(tmp_path, name: str, levels: int) -> str:
    """A real config with the tiny backbone (same code paths, less time)."""
    path = tmp_path / f'tiny_{name}'
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / name)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}] * {levels}),
    test_cfg=dict(window_batch_size=8))
""")
    return str(path)


def test_live_tensor_bytes_follows_allocations_and_frees():
    tracker = LiveTensorBytes()
    with tracker:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 live
        view = b.view(10, 100)  # shares b's storage: no new bytes
        del a  # 4000 live
        c = b + view.flatten()  # 8000 live
        del b, view  # 4000 live
        d = torch.ones(250, dtype=torch.float64)  # 6000 live
    assert tracker.peak == 8000
    assert tracker.current == 6000
    del c, d
    assert tracker.current == 0


def test_backbone_flops_count_every_multiply_add():
    # ViT-S/14 at 224: 16 x 16 patches + the class token.
    backbone = DinoVisionTransformer('vits14')
    tokens, dim, depth = 257, 384, 12
    per_block = 2 * tokens * (dim * 3 * dim + dim * dim + 2 * dim * 4 * dim)
    attention = 2 * 2 * tokens * tokens * dim
    embed = 2 * 256 * (3 * 14 * 14 * dim)
    want = depth * (per_block + attention) + embed
    assert backbone_flops(backbone, 224, 224) == pytest.approx(want)
    # 220 px is center-padded to 224: the same grid.
    assert backbone_flops(backbone, 220,
                          221) == backbone_flops(backbone, 224, 224)


def run_tool(tmp_path, capsys, *args):
    out = tmp_path / 'results.jsonl'
    assert main([*map(str, args), '--device', 'cpu', '--out', str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = out.read_text().splitlines()
    assert json.loads(lines[-1]) == printed
    return printed, len(lines)


def windows_along(length: int, crop: int, stride: int) -> int:
    """mmseg's slide_inference: max(ceil((length - crop) / stride), 0) + 1
    windows along a side."""
    return max(math.ceil((length - crop) / stride), 0) + 1


def keep_ratio_size(height: int, width: int, long: int, short: int) -> tuple:
    """mmcv's keep-ratio Resize to scale (long, short): the largest factor
    that fits both, sides rounded half up."""
    factor = min(long / max(height, width), short / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def tensor_bytes_of(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in [*module.parameters(), *module.buffers()])


def tiny_vit_parameters(dim: int, depth: int) -> int:
    """Parameters of a DINOv2 ViT with an MLP FFN (Meta's layout): patch
    embedding, class/mask tokens, 37 x 37 + 1 positions, per block two
    norms, qkv, proj, two LayerScales and the 4x MLP, the final norm."""
    block = (2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) +
             2 * dim + (4 * dim * dim + 4 * dim) + (4 * dim * dim + dim))
    return (3 * 14 * 14 * dim + dim + 2 * dim + (1 + 37 * 37) * dim +
            depth * block + 2 * dim)


@pytest.mark.slow  # the tool end to end, stock TTA included
def test_tta_compare_reports_the_stock_path_beside_the_fast_one(
        tmp_path, capsys):
    config = tiny_config(tmp_path, 'voc2012_vits14_ms.py', 4)
    image = (64, 85)
    record, _ = run_tool(tmp_path, capsys, config, '--mode', 'tta', '--scales',
                         '2', '--size', *image, '--compare', '--repeat', 1,
                         '--warmup', 0)
    assert record['mode'] == 'tta' and record['scales'] == 2
    # The ms recipe's first two scales (ratios 1.0 and 1.32 of 640 on the
    # short side), 640 windows at stride 320, both flips of each view; the
    # views of one size share calls of at most window_batch_size=8.
    views = [
        keep_ratio_size(*image, 99999999, int(640 * ratio))
        for ratio in (1.0, 1.32)
    ]
    assert views == [(640, 850), (844, 1121)]
    per_view = [
        windows_along(h, 640, 320) * windows_along(w, 640, 320)
        for h, w in views
    ]
    assert record['windows'] == 2 * sum(per_view)
    assert record['backbone_calls'] == sum(
        math.ceil(2 * n / 8) for n in per_view)
    # The fast path labels every pixel as mmseg's SegTTAModel does.
    assert record['label_agreement'] == 1.0
    assert record['seconds'] > 0 and record['baseline_seconds'] > 0
    # Peaks count the weights and what each path must hold at once: the
    # stock path the 21-class float canvas of the 844 x 1121 view, the fast
    # path a full batch of 8 windows of 3 x 640 x 640 floats.
    weights = tensor_bytes_of(MODELS.build(Config.fromfile(config).model))
    assert record['baseline_peak_bytes'] >= weights + 21 * 844 * 1121 * 4
    assert record['peak_bytes'] >= weights + 8 * 3 * 640 * 640 * 4
    assert record['peak_bytes'] < record['baseline_peak_bytes']


def test_slide_backbone_and_train_modes_append_results(tmp_path, capsys):
    config = tiny_config(tmp_path, 'demo_shapes_vits14_linear.py', 1)
    record, lines = run_tool(tmp_path, capsys, config, '--size', 56, 84)
    assert lines == 1 and record['mode'] == 'slide'
    # The demo's test Resize (448, 224) makes 224 x 336; windows of 224 at
    # stride 149.
    height, width = keep_ratio_size(56, 84, 448, 224)
    assert (height, width) == (224, 336)
    assert record['size'] == [56, 84]
    assert record['windows'] == (
        windows_along(height, 224, 149) * windows_along(width, 224, 149))
    assert 'baseline_seconds' not in record  # no --compare
    record, lines = run_tool(tmp_path, capsys, config, '--mode', 'backbone',
                             '--batch', 2, '--size', 56, 56)
    assert lines == 2
    # The weights (ViT, 48-channel BN, 5-class conv) and the input batch
    # at least.
    dim, depth = TINY_ARCH['embed_dim'], TINY_ARCH['depth']
    vit_bytes = 4 * tiny_vit_parameters(dim, depth)
    assert record['peak_bytes'] >= vit_bytes + 2 * 3 * 56 * 56 * 4
    assert 'mfu' not in record  # no known GPU peak on CPU
    record, lines = run_tool(tmp_path, capsys, config, '--mode', 'train',
                             '--batch', 2, '--size', 56, 56, '--compare',
                             '--repeat', 1)
    assert lines == 3 and record['baseline'] == 'frozen=False'
    # Training the backbone too allocates its gradients in every step:
    # float32, one per parameter.
    assert (record['baseline_peak_bytes'] - record['peak_bytes']
            >= vit_bytes - 4 * (1 + 37 * 37 + 1) * dim)
    # The linear head on 48 channels and 5 classes: BN (2 x 48) + conv.
    assert record['trainable_params'] == 2 * dim + 5 * dim + 5


def test_dataset_mode_times_the_test_loop_batched_and_one_by_one(
        tmp_path, capsys):
    config = tiny_config(tmp_path, 'demo_shapes_vits14_linear.py', 1)
    record, _ = run_tool(tmp_path, capsys, config, '--mode', 'dataset',
                         '--images', 3, '--batch', 3, '--compare', '--repeat',
                         1, '--warmup', 0, '--cfg-options',
                         'test_dataloader.num_workers=0')
    assert record['mode'] == 'dataset' and record['images'] == 3
    # The generated images (ADE20K-like sizes), after the demo's test
    # Resize (448, 224): windows of 224 at stride 149, all of one size, so
    # the 3 images of the step share calls of at most 8 windows.
    sizes = [
        keep_ratio_size(h, w, 448, 224) for h, w in mixed_sizes(3, seed=0)
    ]
    per_image = [
        windows_along(h, 224, 149) * windows_along(w, 224, 149)
        for h, w in sizes
    ]
    assert record['windows'] == sum(per_image) > 3
    assert record['backbone_calls'] == math.ceil(sum(per_image) / 8)
    # One image per step labels every pixel alike: same mIoU.
    assert record['label_agreement'] == 1.0
    assert record['miou'] == record['baseline_miou'] > 0
    assert record['images_per_second'] == pytest.approx(3 / record['seconds'])
    assert record['backbone_images_per_second'] == pytest.approx(
        3 / record['backbone_seconds'])
    assert record['backbone_ratio'] == pytest.approx(
        record['seconds'] / record['backbone_seconds'])
    assert record['batch_speedup'] == pytest.approx(
        record['baseline_seconds'] / record['seconds'])
    # The label checks' cost: the same labels loaded without and with them.
    checked, unchecked = (record['label_load_checked_seconds'],
                          record['label_load_seconds'])
    assert record['label_check_ratio'] == pytest.approx(checked / unchecked)
    assert record['label_check_share'] == pytest.approx(
        (checked - unchecked) / record['seconds'])


def test_generated_folder_is_a_dataset_of_mixed_sizes(tmp_path):
    sizes = mixed_sizes(8, seed=1)
    assert len(set(sizes)) == 8
    for height, width in sizes:
        assert 256 <= min(height, width) <= 512
        assert 0.5 <= width / height <= 2.0
    write_eval_folder(str(tmp_path), sizes[:2], 150, True)
    dataset = DATASETS.build(
        dict(
            type='ADE20KDataset',
            data_root=str(tmp_path),
            ann_file='list.txt',
            data_prefix=dict(img_path='images', seg_map_path='annotations'),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='DinoLoadAnnotations')
            ]))
    assert len(dataset) == 2
    for index, size in enumerate(sizes[:2]):
        item = dataset[index]
        assert item['img'].shape[:2] == size
        labels = item['gt_seg_map']
        # ADE20K's reduce_zero_label: stored 0 is ignored, c + 1 is c.
        assert labels.shape == size and labels[labels != 255].max() <= 149
        assert 255 in labels and len(np.unique(labels)) > 10
