"""The benchmark tool: live-tensor accounting and the results file."""
import json

import torch

from dinov2_seg.apis.benchmark import LiveTensorBytes, main

from conftest import REPO


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


def test_benchmark_tool_appends_a_result_line(tmp_path, capsys):
    out = tmp_path / 'results.jsonl'
    args = [
        str(REPO / 'configs' / 'demo_shapes_vits14_linear.py'), '--device',
        'cpu', '--size', '56', '84', '--out',
        str(out)
    ]
    assert main(args) == 0
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record['size'] == [56, 84] and record['device'] == 'cpu'
    # ViT-S/14 + a 5-class BN head, float32.
    assert 22.0e6 < record['params'] < 22.1e6
    assert abs(record['weights_gib'] * 1024**3 - 4 * record['params']) < 1e5
    assert record['weights_gib'] < record[
        'peak_gib'] < 2 * record['weights_gib']
    assert record['seconds_per_window'] > 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == record
