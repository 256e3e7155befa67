"""The batched slide inference and multi-scale flip test give mmseg's stock
results: same logits up to float rounding, same labels wherever the stock
top-2 margin exceeds 1e-4."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.archs import TINY_ARCH
from helpers.tools import REPO
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
from dinov2_seg.models.segmentors.window_merge import (add_window, axis_bands,
                                                       linear_taps,
                                                       slide_window_spans)


def same_labels(fast: torch.Tensor, stock: torch.Tensor) -> None:
    """Labels of (C, H, W) scores agree wherever the stock top-2 margin
    exceeds 1e-4, and the comparison covers nearly every pixel."""
    top2 = stock.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4
    assert decided.float().mean() > 0.98
    same = fast.argmax(0) == stock.argmax(0)
    assert bool(same[decided].all()), f'{int((~same & decided).sum())} differ'
    assert len(stock.argmax(0).unique()) > 2  # a varied map: not vacuous


@pytest.mark.parametrize('size_in,size_out', [(5, 17), (46, 640), (640, 46),
                                              (683, 512), (7, 7), (1, 4),
                                              (4, 1)])
@pytest.mark.parametrize('align_corners', [False, True])
def test_linear_taps_equal_torch_interpolation(size_in, size_out,
                                               align_corners):
    signal = torch.randn(1, 3, size_in, dtype=torch.float64)
    want = F.interpolate(
        signal, size=size_out, mode='linear', align_corners=align_corners)
    index, weight = linear_taps(size_in, size_out, align_corners)
    got = (signal[:, :, index] * weight).sum(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_window_spans_follow_mmseg_rule():
    # 1000 px, crop 640, stride 320: windows at 0 and 320, the last moved
    # back to end at the border; a short side gets one window of its size.
    assert slide_window_spans(1000, 640, 320) == [(0, 640), (320, 960),
                                                  (360, 1000)]
    assert slide_window_spans(300, 640, 320) == [(0, 300)]
    assert slide_window_spans(640, 640, 320) == [(0, 640)]


def test_window_added_block_by_block_equals_one_product():
    """On CPU add_window runs the row product in blocks that read only the
    head rows they need; the result is the whole band's product."""
    spans = tuple(slide_window_spans(160, 112, 56))  # 2 overlapping
    rows = axis_bands(spans, 8, 160, (4, 6), True, 301, False,
                      torch.device('cpu'))
    cols = axis_bands(((0, 90), ), 7, 90, (0, 0), False, 45, False,
                      torch.device('cpu'))
    torch.manual_seed(0)
    out = torch.zeros(3, 301, 45)
    expected = torch.zeros(3, 301, 45)
    for band in rows:
        assert len(band.blocks) > 1  # more than ROW_BLOCK output rows
        x = torch.randn(3, 8, 7)
        add_window(out, x, band, cols[0])
        expected[:, band.start:band.stop] += (
            band.matrix @ x @ cols[0].matrix.T)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert bool((out != 0).all())  # the two bands cover the image


def tiny_segmentor(config: str, **test_cfg) -> torch.nn.Module:
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cfg.model.backbone.arch = dict(TINY_ARCH)
    cfg.model.backbone.init_cfg = None
    width = TINY_ARCH['embed_dim']
    levels = len(cfg.model.decode_head.in_index)
    cfg.model.decode_head.in_channels = [width] * levels
    cfg.model.decode_head.norm_cfg = dict(type='BN')
    cfg.model.test_cfg.update(test_cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    # Random BN statistics: a head with its init (zero mean, unit var) and
    # a random backbone would predict almost one class.
    bn = model.decode_head.bn
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2)
    torch.nn.init.normal_(model.decode_head.conv_seg.weight, std=1.0)
    return model


def predict_both(model, inputs, metas):
    results = {}
    for fast in (True, False):
        model.test_cfg.fast_inference = fast
        samples = [SegDataSample(metainfo=copy.deepcopy(m)) for m in metas]
        with torch.no_grad():
            out = model.predict(inputs.clone(), samples)
        results[fast] = [s.seg_logits.data for s in out]
    return results[True], results[False]


@pytest.mark.parametrize(
    'shape,ori,flip,batch',
    [
        ((97, 131), (97, 131), False, 8),  # smaller than the window
        ((150, 227), (120, 181), False, 8),  # windows overlap; downsized
        ((150, 227), (301, 455), True, 2),  # upsized, flipped, capped
        ((150, 227), (150, 227), False, 1),  # one window per call
    ])
def test_fast_slide_equals_stock(shape, ori, flip, batch):
    model = tiny_segmentor(
        'ade20k_vits14_ms.py',
        crop_size=(112, 112),
        stride=(56, 56),
        window_batch_size=batch)
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, *shape)
    metas = [
        dict(
            ori_shape=ori,
            img_shape=shape,
            flip=flip,
            flip_direction='horizontal')
    ] * 2
    fast, stock = predict_both(model, inputs, metas)
    for f, s in zip(fast, stock):
        assert f.shape == (150, *ori)
        # Logits reach 60 here; the stock float32 resizes alone are up to
        # 2e-4 away from a float64 run of the stock path.
        torch.testing.assert_close(f, s, rtol=0, atol=5e-4)
        same_labels(f, s)


def test_fast_slide_removes_padding_and_flips_vertically():
    model = tiny_segmentor(
        'voc2012_vits14_linear.py', crop_size=(70, 70), stride=(42, 42))
    inputs = torch.randn(1, 3, 100, 130)
    # The image is the top-left 91 x 120 of the input (right/bottom padding
    # of 10 and 9, as a size_divisor pad would leave).
    metas = [
        dict(
            ori_shape=(60, 80),
            img_shape=(91, 120),
            padding_size=[0, 10, 0, 9],
            flip=True,
            flip_direction='vertical')
    ]
    fast, stock = predict_both(model, inputs, metas)
    torch.testing.assert_close(fast[0], stock[0], rtol=0, atol=5e-4)
    same_labels(fast[0], stock[0])


def test_windows_are_batched_up_to_the_cap():
    model = tiny_segmentor(
        'ade20k_vits14_linear.py',
        crop_size=(56, 56),
        stride=(28, 28),
        window_batch_size=3)
    calls = []
    model.backbone.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0]))
    inputs = torch.randn(1, 3, 56, 140)  # 1 x 4 windows
    meta = dict(ori_shape=(56, 140), img_shape=(56, 140))
    with torch.no_grad():
        model.predict(inputs, [SegDataSample(metainfo=meta)])
    assert calls == [3, 1]
    calls.clear()
    model.test_cfg.fast_inference = False  # stock: one window per call
    with torch.no_grad():
        model.predict(inputs, [SegDataSample(metainfo=meta)])
    assert calls == [1, 1, 1, 1]


def test_windows_go_one_by_one_on_cpu_by_default():
    # The configs' default (None): batches of windows do not pay on a CPU.
    model = tiny_segmentor(
        'ade20k_vits14_linear.py',
        crop_size=(56, 56),
        stride=(28, 28),
        window_batch_size=None)
    calls = []
    model.backbone.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0]))
    meta = dict(ori_shape=(56, 140), img_shape=(56, 140))
    with torch.no_grad():
        model.predict(
            torch.randn(1, 3, 56, 140), [SegDataSample(metainfo=meta)])
    assert calls == [1, 1, 1, 1]


def test_window_batch_size_must_be_positive():
    model = tiny_segmentor('ade20k_vits14_linear.py', window_batch_size=0)
    meta = dict(ori_shape=(56, 56), img_shape=(56, 56))
    with pytest.raises(ValueError, match='window_batch_size must be >= 1'):
        model.predict(
            torch.randn(1, 3, 56, 56), [SegDataSample(metainfo=meta)])


def photo(height: int = 61, width: int = 89) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 3, cols * 2, (rows + cols)], -1)
    return np.clip(base + rng.normal(0, 30, base.shape), 0,
                   255).astype(np.uint8)


def tta_model(scales: int, **test_cfg):
    cfg = Config.fromfile(str(REPO / 'configs' / 'voc2012_vits14_ms.py'))
    tiny = tiny_segmentor('voc2012_vits14_ms.py', **test_cfg)
    model = init_segmentor(
        cfg,
        scales=scales,
        cfg_options={
            'model.backbone.arch': dict(TINY_ARCH, _delete_=True),
            'model.backbone.init_cfg': None,
            'model.decode_head.in_channels': [TINY_ARCH['embed_dim']] * 4,
            'model.decode_head.norm_cfg': dict(type='BN'),
            'model.test_cfg': test_cfg,
        })
    model.module.load_state_dict(tiny.state_dict())
    return model


def tta_data(model, image):
    """The TTA pipeline's views of ``image``, as the test loader gives
    them to a TTA model."""
    steps = copy.deepcopy(model.pipeline)
    steps[0]['type'] = 'LoadImageFromNDArray'
    return pseudo_collate([Compose(steps)(dict(img=image))])


def test_fast_multiscale_flip_test_equals_stock():
    """The batched TTA model against mmseg's own SegTTAModel (its
    test_step runs the stock module once per view and averages the
    softmax) on the stock slide path: the same labels."""
    image = photo()
    model = tta_model(scales=2, window_batch_size=5)
    data = tta_data(model, image)
    views = []
    model.module.data_preprocessor.register_forward_hook(
        lambda module, args, out: views.append(out['inputs'].shape))
    with torch.no_grad():
        model.module.test_cfg.fast_inference = True
        fast = model.test_step(copy.deepcopy(data))[0]
        # 2 scales x 2 flips, short side 640 and int(640 * 1.32).
        assert sorted(v[-2] for v in views) == [640, 640, 844, 844]
        model.module.test_cfg.fast_inference = False
        stock = SegTTAModel(module=model.module).test_step(
            copy.deepcopy(data))[0]
    assert len(views) == 8  # the stock path preprocessed the 4 views too
    probs = fast.seg_logits.data
    assert probs.shape == (21, 61, 89)
    # Probabilities: positive, summing to 1 over the classes.
    torch.testing.assert_close(probs.sum(0), torch.ones(61, 89))
    fast_labels = fast.pred_sem_seg.data.reshape(61, 89)
    stock_labels = stock.pred_sem_seg.data.reshape(61, 89)
    assert torch.equal(fast_labels, probs.argmax(0))
    top2 = probs.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4
    assert decided.float().mean() > 0.98
    same = fast_labels == stock_labels
    assert bool(same[decided].all()), f'{int((~same & decided).sum())} differ'
    assert len(stock_labels.unique()) > 2  # a varied map: not vacuous


def test_inference_api_runs_the_fast_path():
    image = photo()
    model = tta_model(scales=1)
    called = []
    model.module.slide_logits = (lambda views, f=model.module.slide_logits:
                                 called.append(len(views)) or f(views))
    labels = inference_segmentor(model, image)
    assert labels.shape == (61, 89)
    assert called == [2]  # one call for the two flips of the one scale


@pytest.mark.parametrize('scales', [None, 1])
def test_a_batch_of_images_of_different_sizes_equals_one_by_one(scales):
    images = [photo(61, 89), photo(40, 52), photo(61, 89)]
    if scales is None:
        model = init_segmentor(
            str(REPO / 'configs' / 'voc2012_vits14_linear.py'),
            cfg_options={
                'model.backbone.arch': dict(TINY_ARCH, _delete_=True),
                'model.backbone.init_cfg': None,
                'model.decode_head.in_channels': [TINY_ARCH['embed_dim']],
                'model.decode_head.norm_cfg': dict(type='BN'),
                'model.test_cfg.window_batch_size': 8,
            })
        segmentor = model
    else:
        model = tta_model(scales=scales, window_batch_size=8)
        segmentor = model.module
    calls = []
    segmentor.backbone.register_forward_hook(
        lambda module, args, out: calls.append(len(args[0])))
    one_by_one = [inference_segmentor(model, image) for image in images]
    calls_one_by_one = len(calls)
    calls.clear()
    batched = inference_segmentor(model, images, batch_size=3)
    assert [b.shape for b in batched] == [(61, 89), (40, 52), (61, 89)]
    for a, b in zip(one_by_one, batched):
        assert np.array_equal(a, b)
    # The windows of the three images share backbone calls.
    assert len(calls) < calls_one_by_one
    with pytest.raises(ValueError, match='batch_size must be >= 1'):
        inference_segmentor(model, images, batch_size=0)
