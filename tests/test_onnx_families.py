"""ONNX export and whole-image inference of every model family beyond the
DINOv2 linear heads (tests/test_onnx_export.py): DINOv3 linear (ViT with
RoPE, ConvNeXt), EoMT on DINOv2 and DINOv3 (their released files: the
DINOv2 .bin, the DINOv3 delta + base pair), Mask2Former on DINOv2 and
DINOv3 (feature pyramid) and Meta's DINOv3 adapter + Mask2Former (its
released layout), each exported once per module at tiny sizes, with random
weights, and compared with the PyTorch model on non-square images.

Tolerances: the exported graph runs the same float32 operations as
PyTorch, in another order (ONNX Runtime fuses and reorders the matrix
products, layer norms and softmaxes), so window scores differ by float32
rounding accumulated over the blocks: measured at most ~1e-5 on these
models, checked at 1e-4 (scores are logits of order 1 for the linear heads,
probabilities in [0, 1] for Mask2Former and EoMT). Labels then agree except
where two classes' scores are closer than that: >= 99.9% of the pixels is
required (all of them agreed when measured).
"""

import contextlib
import io
import re

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.dinov3_meta import fabricate_meta_file
from helpers.eomt import TINY_FILE, TINY_REG
from helpers.fabricate import fabricate_eomt_state
from helpers.modules import require
from helpers.tools import REPO
from mmengine.config import Config

require('onnx')
require('onnxruntime')
require('onnxscript')  # torch.onnx's exporter needs it

WINDOW = 64
# Logits (or class probabilities) of the exported window network against
# PyTorch's (module docstring).
ATOL = 1e-4


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def short_side(cfg: Config, side: int, tta_sides=(64, 80)) -> Config:
    """Test images resized to a ``side`` short side (and TTA views to
    ``tta_sides``, all at least the window, which a fixed-size export
    needs), keeping each Resize step's other settings."""
    for step in cfg.test_pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (1_000_000, side)
    if 'tta_pipeline' in cfg:
        resizes = cfg.tta_pipeline[-1]['transforms'][0]
        cfg.tta_pipeline[-1]['transforms'][0] = [
            dict(resizes[0], scale=(1_000_000, s)) for s in tta_sides
        ]
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline
    return cfg


def windows_of(cfg: Config, **test_cfg) -> dict:
    return dict(
        data_preprocessor=dict(size=(WINDOW, WINDOW)),
        test_cfg=dict(
            dict(crop_size=(WINDOW, WINDOW), stride=(48, 48)), **test_cfg))


def dinov3_linear(tmp):
    cfg = load('dinov3/ade20k_vits16_linear')
    backbone = tmp / 'dinov3_vits16_pretrain.pth'
    fabricate_meta_file('vits16', backbone, depth=2, seed=1)
    cfg.merge_from_dict(
        dict(
            model=dict(
                windows_of(cfg),
                backbone=dict(
                    arch=dict(
                        _delete_=True, embed_dim=384, depth=2, num_heads=6)),
                decode_head=dict(num_classes=7))))
    return short_side(cfg, 70), None, backbone


def dinov3_convnext(tmp):
    cfg = load('dinov3/ade20k_convnext_tiny_linear')
    cfg.merge_from_dict(
        dict(
            model=dict(
                windows_of(cfg),
                backbone=dict(
                    arch=dict(
                        _delete_=True,
                        depths=[1, 1, 2, 1],
                        dims=[8, 16, 24, 32]),
                    init_cfg=None),
                decode_head=dict(in_channels=[32], num_classes=7))))
    return short_side(cfg, 70), None, None


def eomt_dinov2_release(tmp):
    """configs/ade20k_vitl14_eomt_official.py at the tiny file's sizes,
    loading a fabricated file in EoMT's released layout."""
    cfg = load('ade20k_vitl14_eomt_official')
    cfg.merge_from_dict(
        dict(
            model=dict(
                windows_of(cfg, window_rule='spread'),
                backbone=dict(arch=dict(TINY_REG, _delete_=True), img_size=64),
                decode_head=dict(
                    embed_dims=48,
                    num_queries=6,
                    num_blocks=2,
                    mask_annealing=dict(
                        _delete_=True, start_iters=[1, 2], end_iters=[2, 3
                                                                      ])))))
    checkpoint = tmp / 'ade20k_semantic_eomt_large_512.bin'
    torch.save(fabricate_eomt_state(**TINY_FILE), checkpoint)
    return short_side(cfg, 64), checkpoint, None


def eomt_dinov3_release(tmp):
    """EoMT's DINOv3 release: deltas on top of Meta's backbone file."""
    from test_dinov3_eomt_delta import fabricate_delta, tiny_config
    cfg = tiny_config()
    base = tmp / 'dinov3_vits16_pretrain.pth'
    fabricate_meta_file('vits16', base, depth=2, seed=0)
    delta = tmp / 'delta.bin'
    torch.save(fabricate_delta(), delta)
    return short_side(cfg, 64), delta, base


def m2f_pyramid(name: str, arch: dict, out_indices: list):

    def build(tmp):
        from test_mask2former import tiny_model
        cfg = load(name)
        overrides = tiny_model(num_classes=5)
        overrides['backbone'] = dict(
            arch=dict(arch, _delete_=True),
            out_indices=out_indices,
            init_cfg=None)
        cfg.merge_from_dict(dict(model=dict(overrides, **windows_of(cfg))))
        return short_side(cfg, 70), None, None

    return build


def meta_adapter_release(tmp):
    """Meta's DINOv3 adapter + Mask2Former, reduced, from the two files in
    Meta's layouts (head file + backbone file), with Meta's
    'stride_square' windows."""
    from test_dinov3_m2f_official import fabricate_small_files, small_config
    backbone, _, head, _ = fabricate_small_files(tmp)
    cfg = small_config()
    cfg.merge_from_dict(dict(model=windows_of(cfg)))
    cfg.model.test_cfg.window_rule = 'stride_square'
    return short_side(cfg, 64), head, backbone


FAMILIES = {
    'dinov3_linear':
    dinov3_linear,
    'dinov3_convnext_linear':
    dinov3_convnext,
    'eomt_dinov2_release':
    eomt_dinov2_release,
    'eomt_dinov3_release':
    eomt_dinov3_release,
    'm2f_dinov2_pyramid':
    m2f_pyramid('ade20k_vits14_m2f', TINY_ARCH, [0, 1, 2, 3]),
    'm2f_dinov3_pyramid':
    m2f_pyramid('dinov3/ade20k_vits16_m2f',
                dict(embed_dim=48, depth=4, num_heads=3), [0, 1, 2, 3]),
    'm2f_dinov3_meta_adapter':
    meta_adapter_release,
}

# Random Mask2Former heads at these widths give one class everywhere:
# their class and mask embeddings are widened, the ViTs' LayerScale raised.
SPREAD = ('m2f_dinov2_pyramid', 'm2f_dinov3_pyramid')

EMBEDDINGS = ('decode_head.cls_embed', 'decode_head.mask_embed')


def spread_random_predictions(model) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(EMBEDDINGS):
                param.normal_(0, 0.5)
            elif name.endswith('gamma'):
                param.uniform_(0.5, 1.5)


def structured_image(height: int, width: int, seed: int) -> np.ndarray:
    """Noise with a dark band and a bright inverted block: regions the
    random models tell apart."""
    image = np.random.default_rng(seed).integers(
        0, 255, (height, width, 3), dtype=np.uint8)
    image[:, :width * 2 // 5] //= 4
    image[height // 2:,
          width * 2 // 3:] = 255 - image[height // 2:, width * 2 // 3:] // 3
    return image


# Mask2Former graphs take 20-60 s each to export (torch.export of the
# pixel decoder and the 9-layer decoder): run with `-m slow` / make test.
SLOW = ('m2f_dinov2_pyramid', 'm2f_dinov3_pyramid', 'm2f_dinov3_meta_adapter')


@pytest.fixture(
    scope='module',
    params=[
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
        for name in sorted(FAMILIES)
    ])
def exported(request, tmp_path_factory):
    """(PyTorch model, exported file, family) of each family, exported
    once for the module."""
    from dinov2_seg.apis.inference import init_segmentor
    from dinov2_seg.deployment import export_onnx
    tmp = tmp_path_factory.mktemp(request.param)
    cfg, checkpoint, backbone = FAMILIES[request.param](tmp)
    config = tmp / f'{request.param}.py'
    cfg.dump(str(config))
    torch.manual_seed(0)
    model = init_segmentor(
        str(config), checkpoint and str(checkpoint), backbone
        and str(backbone))
    if request.param in SPREAD:
        spread_random_predictions(model)
    out = tmp / 'model.onnx'
    if checkpoint is None:  # random weights: this model's
        export_onnx(model, str(out), (WINDOW, WINDOW))
        log = None
    else:  # released files: through the tool, as a user exports them
        from dinov2_seg.cli.export_onnx import main
        args = [str(config), str(checkpoint), '--out', str(out)]
        if backbone is not None:
            args += ['--backbone', str(backbone)]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(args) == 0
        log = stdout.getvalue()
    return model, out, request.param, log


def test_window_scores_match_pytorch_for_any_batch(exported):
    import onnx

    from dinov2_seg.deployment import compare_with_onnxruntime
    model, out, _, _ = exported
    shape = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert shape[0].dim_param and [d.dim_value
                                   for d in shape[1:]] == [3, WINDOW, WINDOW]
    for count in (1, 3):
        windows = np.random.default_rng(count).standard_normal(
            (count, 3, WINDOW, WINDOW)).astype(np.float32)
        assert compare_with_onnxruntime(model, str(out), windows) <= ATOL


def test_whole_image_labels_equal_inference_segmentor(exported):
    """A non-square image through the recorded config alone (no config
    given) against the PyTorch model's slide inference."""
    from dinov2_seg.apis.inference import inference_segmentor
    from dinov2_seg.deployment import OnnxSegmentor
    model, out, family, _ = exported
    image = structured_image(45, 77, seed=5)
    expected = inference_segmentor(model, image)
    segmentor = OnnxSegmentor(str(out))
    labels = segmentor(image)
    assert labels.shape == expected.shape == (45, 77)
    if family != 'm2f_dinov3_meta_adapter':
        # Decisions worth comparing. The reduced Meta adapter model
        # (fabricated files) predicts one class on any image tried; its
        # scores are compared window by window above.
        assert len(np.unique(expected)) > 1, family
    assert (labels == expected).mean() >= 0.999
    summary = segmentor.summary
    assert summary['window'] == [WINDOW, WINDOW]
    assert summary['window_rule'] == model.test_cfg.get(
        'window_rule', 'stride')
    assert summary['classes'] == list(model.dataset_meta['classes'])
    assert summary['family'] == dict(
        dinov3='linear', eomt='eomt', m2f='mask2former')[family.split('_')[0]]


@pytest.mark.parametrize('exported', ['dinov3_linear'], indirect=True)
def test_tta_labels_equal_inference_segmentors(exported):
    """The config's multi-scale flip test (2 scales, each flipped) around
    the ONNX session, against the PyTorch TTA model."""
    from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
    from dinov2_seg.deployment import OnnxSegmentor
    model, out, _, _ = exported
    image = np.random.default_rng(6).integers(
        0, 255, (50, 41, 3), dtype=np.uint8)
    tta = init_segmentor(model.cfg, scales=2)
    tta.module.load_state_dict(model.state_dict())
    expected = inference_segmentor(tta, image)
    labels = OnnxSegmentor(str(out), scales=2)(image)
    assert len(np.unique(expected)) > 1
    assert (labels == expected).mean() >= 0.999


# What the tool prints for the families exported from released files.
TOOL_NAMES = {
    'eomt_dinov2_release': (r'DinoVisionTransformer\(custom\)', 'EoMTHead'),
    'eomt_dinov3_release': (r'DinoV3VisionTransformer\(custom\)', 'EoMTHead'),
    'm2f_dinov3_meta_adapter':
    (r'DinoV3Adapter\(custom\)', 'DinoMask2FormerHead'),
}


def test_tool_exports_released_files_and_prints_the_size(exported):
    """tools/export_onnx.py CONFIG CHECKPOINT [--backbone FILE] on EoMT's
    DINOv2 .bin, its DINOv3 delta + Meta's base file, and Meta's DINOv3
    Mask2Former head + backbone file."""
    _, out, family, log = exported
    if family not in TOOL_NAMES:
        pytest.skip('random weights: exported through export_onnx')
    backbone, head = TOOL_NAMES[family]
    size = re.search(
        rf'{backbone} \+ {head} \(\d+ classes\), 64x64 windows -> '
        r'.*model\.onnx \((\d+\.\d) MiB\)', log)
    assert size, log
    assert float(size.group(1)) == round(out.stat().st_size / 2**20, 1)
    assert re.search(
        r'Constants of the window size: .*(RoPE tables|'
        'positional embedding)', log)
    found = re.search(
        r'max \|difference\| of the logits (\S+) \(tolerance 1e-03\): OK', log)
    assert found and float(found.group(1)) <= ATOL


@pytest.mark.slow
def test_untraceable_part_is_refused_naming_the_op_and_place(
        tmp_path, monkeypatch):
    """Without the static level shapes (:mod:`.static_levels`), mmdet's
    pixel decoder does not trace: the refusal names the op and the line,
    as the exporter measured it, and writes no file."""
    import dinov2_seg.deployment.window_constants as constants
    from dinov2_seg.apis.inference import init_segmentor
    from dinov2_seg.deployment import NotExportableError, export_onnx
    monkeypatch.setattr(constants, 'static_level_shapes',
                        contextlib.nullcontext)
    cfg, _, _ = FAMILIES['m2f_dinov2_pyramid'](tmp_path)
    cfg.dump(str(tmp_path / 'm2f.py'))
    model = init_segmentor(str(tmp_path / 'm2f.py'))
    with pytest.raises(
            NotExportableError,
            match=r'DinoVisionTransformer \+ DinoMask2FormerHead: torch\.onnx '
            r'could not export the window network: .*\(in forward, '
            r'mmdet/models/layers/msdeformattn_pixel_decoder\.py:\d+: '
            r'feat_hw = torch\._shape_as_tensor\(feat\)'):
        export_onnx(model, str(tmp_path / 'm2f.onnx'), (WINDOW, WINDOW))
    assert not (tmp_path / 'm2f.onnx').exists()


def test_benchmark_onnx_mode_times_both_runtimes_on_the_same_windows(tmp_path):
    """tools/benchmark.py --mode onnx (in-process): ONNX Runtime against
    PyTorch eager on the same windows, with the int8 file's figures."""
    import json

    from dinov2_seg.cli.benchmark import main
    config = tmp_path / 'tiny_linear.py'
    config.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'ade20k_vits14_linear.py')!r}]
model = dict(backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
             decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}]))
""")
    out = tmp_path / 'results.jsonl'
    assert main([
        str(config), '--mode', 'onnx', '--device', 'cpu', '--size', '56', '70',
        '--batch', '2', '--repeat', '1', '--warmup', '0', '--quantize',
        '--out',
        str(out)
    ]) == 0
    record = json.loads(out.read_text().splitlines()[-1])
    assert (record['mode'], record['windows'], record['size']) == ('onnx', 2,
                                                                   [56, 70])
    # The same windows: equal labels, float32 rounding apart.
    assert record['label_agreement'] == 1.0
    assert record['max_abs_difference'] <= ATOL
    assert record['speedup_vs_eager'] == pytest.approx(
        record['eager_seconds'] / record['seconds'])
    assert record['int8_speedup_vs_float32'] == pytest.approx(
        record['seconds'] / record['int8_seconds'])
    assert 0 < record['int8_label_agreement'] <= 1
    assert record['int8_megabytes'] < record['onnx_megabytes']
