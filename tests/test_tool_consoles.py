"""What tools/export_onnx.py prints: its two result lines, without the
libraries' log lines (``--verbose``, which brings them back, is tested on
tools/inference.py in test_inference.py: both use the same quiet_console)."""
import pytest
from helpers.archs import TINY_ARCH
from helpers.modules import require
from helpers.tools import REPO, check, run


@pytest.mark.slow
def test_export_tool_prints_its_results_only(tmp_path):
    require('onnxruntime')
    require('onnxscript')
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    config = tmp_path / 'tiny.py'
    config.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'voc2012_vits14_linear.py')!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), init_cfg=None),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}]))
""")
    checkpoint = tmp_path / 'whole.pth'
    model = MODELS.build(Config.fromfile(str(config)).model)
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    args = ('tools/export_onnx.py', config, checkpoint, '--size', '56', '56',
            '--out', tmp_path / 'model.onnx')
    console = check(run(*args))
    lines = console.strip().splitlines()
    assert len(lines) == 3, console
    assert lines[0].startswith('Exported DinoVisionTransformer(custom) + '
                               'DinoBNHead (21 classes), 56x56 windows -> ')
    assert lines[0].endswith(' MiB)')  # its size on disk
    # What the fixed window size froze into the file.
    assert lines[1].strip() == ('Constants of the window size: '
                                'segmentor.backbone: positional embedding')
    assert lines[2].startswith('onnxruntime vs PyTorch on 2 random windows')
