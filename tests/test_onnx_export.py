"""tools/export_onnx.py and whole-image inference with the exported file,
against the PyTorch model, on fabricated Meta-layout weights."""
import re

import numpy as np
import pytest
import torch
from helpers.fabricate import fabricate_head_file, fabricate_official_file
from helpers.modules import require
from helpers.tools import REPO, check, run

require('onnx')
require('onnxruntime')
require('onnxscript')  # torch.onnx's exporter needs it
# Every test runs tools/export_onnx.py in a subprocess (or its output).
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def meta_files(tmp_path_factory):
    """ViT-S/14 cut to 4 blocks (Meta's names and widths) and an ms head for
    VOC's 21 classes, and a config for that depth."""
    root = tmp_path_factory.mktemp('onnx')
    backbone = root / 'dinov2_vits14_pretrain.pth'
    fabricate_official_file('vits14', backbone, depth=4)
    head = root / 'dinov2_vits14_voc2012_ms_head.pth'
    fabricate_head_file(head, 384, 4, 21, seed=3)
    config = root / 'voc2012_vits14_4blocks_ms.py'
    config.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'voc2012_vits14_ms.py')!r}]
model = dict(backbone=dict(arch=dict(
    _delete_=True, embed_dim=384, depth=4, num_heads=6, ffn='mlp',
    num_register_tokens=0, interpolate_offset=0.1,
    interpolate_antialias=False)))
""")
    return config, head, backbone


@pytest.fixture(scope='module')
def exported(meta_files, tmp_path_factory):
    config, head, backbone = meta_files
    out = tmp_path_factory.mktemp('exported') / 'model.onnx'
    result = run('tools/export_onnx.py', config, head, '--backbone', backbone,
                 '--out', out)
    return out, check(result)


def test_export_reports_the_onnxruntime_check(exported):
    out, log = exported
    assert re.search(
        r'DinoVisionTransformer\(custom\) \+ DinoBNHead \(21 classes\), '
        r'640x640 windows -> .*model\.onnx \(\d+\.\d MiB\)', log)
    found = re.search(
        r'max \|difference\| of the logits (\S+) \(tolerance 1e-03\): OK', log)
    assert found, log
    assert 0 < float(found.group(1)) <= 1e-3


def test_onnx_file_takes_any_batch_of_windows(exported, meta_files):
    import onnx
    import onnxruntime

    from dinov2_seg.apis.inference import init_segmentor
    out, _ = exported
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    shape = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shape][1:] == [3, 640, 640]
    session = onnxruntime.InferenceSession(
        str(out), providers=['CPUExecutionProvider'])
    config, head, backbone = meta_files
    segmentor = init_segmentor(str(config), str(head), str(backbone))
    windows = torch.randn(
        3, 3, 640, 640, generator=torch.Generator().manual_seed(1))
    found = session.run(None, {'image': windows.numpy()})[0]
    # The head's logits on the patch grid: 640 px center-padded to 644 =
    # 46 patches of 14.
    with torch.no_grad():
        expected = segmentor.decode_head(segmentor.extract_feat(windows))
    assert found.shape == (3, 21, 46, 46)
    np.testing.assert_allclose(found, expected.numpy(), atol=1e-3)


@pytest.mark.parametrize('scales', [None, 2])
def test_onnx_slide_inference_gives_the_labels_of_inference_segmentor(
        exported, meta_files, scales):
    from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
    from dinov2_seg.deployment import OnnxSegmentor
    out, _ = exported
    config, head, backbone = meta_files
    # 48x50 becomes 640x667 (short side 640): 2 windows at scale 1, 4 at
    # 1.32 (845x880); the flips slide the mirrored image.
    image = np.random.default_rng(2).integers(
        0, 255, (48, 50, 3), dtype=np.uint8)
    model = init_segmentor(
        str(config), str(head), str(backbone), scales=scales)
    expected = inference_segmentor(model, image)
    onnx_segmentor = OnnxSegmentor(str(out), str(config), scales=scales)
    labels = onnx_segmentor(image)
    assert labels.shape == (48, 50) and labels.dtype == np.int64
    assert len(np.unique(expected)) > 1  # a decision worth comparing
    # Exact: the closest decision here has a margin of ~1e-4, the network's
    # float differences are ~1e-5.
    np.testing.assert_array_equal(labels, expected)
    assert onnx_segmentor.dataset_meta['classes'][15] == 'person'


def test_tolerance_failure_exits_non_zero(meta_files, tmp_path):
    import onnx
    config, head, backbone = meta_files
    out = tmp_path / 'small.onnx'
    result = run('tools/export_onnx.py', config, head, '--backbone', backbone,
                 '--size', '84', '112', '--opset', '19', '--tolerance',
                 '1e-12', '--out', out)
    assert result.returncode == 1
    assert '84x112 windows' in result.stdout
    assert re.search(r'\(tolerance 1e-12\): FAILED', result.stdout)
    assert onnx.load(str(out)).opset_import[0].version == 19


def test_opset_below_18_is_refused(meta_files, tmp_path):
    config, head, backbone = meta_files
    result = run('tools/export_onnx.py', config, head, '--backbone', backbone,
                 '--opset', '17', '--out', tmp_path / 'x.onnx')
    assert result.returncode != 0
    assert ('--opset 17: torch.onnx writes opset 18 and converts only to '
            'newer ones') in result.stderr


def test_window_size_must_match_the_config(exported, meta_files, tmp_path):
    from dinov2_seg.deployment import OnnxSegmentor
    out, _ = exported
    config, _, _ = meta_files
    with pytest.raises(
            ValueError,
            match=r'takes 640x640 windows, the config '
            r'slides 512x512 ones \(model.test_cfg.crop_size\); '
            'export with --size 512 512'):
        OnnxSegmentor(
            str(out),
            str(config),
            cfg_options={'model.test_cfg.crop_size': (512, 512)})


def test_images_smaller_than_the_window_are_refused(exported, meta_files):
    from dinov2_seg.deployment import OnnxSegmentor
    out, _ = exported
    config, _, _ = meta_files
    segmentor = OnnxSegmentor(str(out), str(config))
    view = torch.zeros(3, 500, 900, dtype=torch.uint8)
    with pytest.raises(
            ValueError,
            match='The resized image is 500x900, '
            'smaller than the 640x640 window'):
        segmentor.view_logits(view, dict(ori_shape=(50, 90)))


def test_whole_image_inference_is_refused_with_the_reason(
        tmp_path, meta_files):
    config, head, backbone = meta_files
    result = run('tools/export_onnx.py', config, head, '--backbone', backbone,
                 '--out', tmp_path / 'whole.onnx', '--cfg-options',
                 'model.test_cfg.mode=whole')
    assert result.returncode != 0
    assert ("model.test_cfg.mode='whole': exports hold one slide window's "
            "network; set test_cfg.mode='slide'") in result.stderr
    assert not (tmp_path / 'whole.onnx').exists()
