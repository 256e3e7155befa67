"""The benchmark tool: live-tensor accounting, the compared modes and the
results file."""
import json

import pytest
import torch

from helpers.archs import TINY_ARCH

from helpers.tools import REPO
from dinov2_seg.apis.benchmark import LiveTensorBytes, backbone_flops, main
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
    assert backbone_flops(backbone, 220, 221) == backbone_flops(
        backbone, 224, 224)


def run_tool(tmp_path, capsys, *args):
    out = tmp_path / 'results.jsonl'
    assert main([*map(str, args), '--device', 'cpu', '--out', str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = out.read_text().splitlines()
    assert json.loads(lines[-1]) == printed
    return printed, len(lines)


def test_tta_compare_reports_the_stock_path_beside_the_fast_one(
        tmp_path, capsys):
    record, _ = run_tool(tmp_path, capsys,
                         tiny_config(tmp_path, 'voc2012_vits14_ms.py', 4),
                         '--mode', 'tta', '--scales', '2', '--size', 64, 85,
                         '--compare', '--repeat', 1, '--warmup', 0)
    assert record['mode'] == 'tta' and record['scales'] == 2
    # Views of 640 x 850 and 844 x 1121: 1 x 2 and 2 x 3 windows of 640,
    # two flips each; at most 8 windows per backbone call.
    assert record['windows'] == 2 * (2 + 6)
    assert record['backbone_calls'] == 1 + 2
    assert record['label_agreement'] == 1.0
    for key in ('seconds', 'baseline_seconds', 'backbone_seconds'):
        assert record[key] > 0
    for key in ('backbone_share', 'baseline_backbone_share'):
        assert 0 < record[key] < 1
    assert record['speedup'] == pytest.approx(record['baseline_seconds'] /
                                              record['seconds'])
    # The stock path holds the 21-class canvas of the 844 x 1121 view.
    assert record['baseline_peak_bytes'] > 21 * 844 * 1121 * 4
    assert record['peak_bytes'] < record['baseline_peak_bytes']


def test_slide_backbone_and_train_modes_append_results(tmp_path, capsys):
    config = tiny_config(tmp_path, 'demo_shapes_vits14_linear.py', 1)
    record, lines = run_tool(tmp_path, capsys, config, '--size', 56, 84)
    assert lines == 1 and record['mode'] == 'slide'
    # The test pipeline resizes to 224 x 336: two 224 windows.
    assert record['size'] == [56, 84] and record['windows'] == 2
    assert 'baseline_seconds' not in record  # no --compare
    record, lines = run_tool(tmp_path, capsys, config, '--mode', 'backbone',
                             '--batch', 2, '--size', 56, 56)
    assert lines == 2
    assert record['images_per_second'] == pytest.approx(2 /
                                                        record['seconds'])
    assert 'mfu' not in record  # no known GPU peak on CPU
    record, lines = run_tool(tmp_path, capsys, config, '--mode', 'train',
                             '--batch', 2, '--size', 56, 56, '--compare',
                             '--repeat', 1)
    assert lines == 3 and record['baseline'] == 'frozen=False'
    # Training the backbone too needs its gradients and AdamW moments.
    assert record['baseline_peak_bytes'] > record['peak_bytes']
    # The linear head on 48 channels and 5 classes: BN (2 x 48) + conv.
    assert record['trainable_params'] == 2 * 48 + 5 * 48 + 5
