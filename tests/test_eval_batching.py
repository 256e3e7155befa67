"""Evaluation with several images per test step: images of different
sizes share the window batches (at most ``window_batch_size`` windows per
backbone call) and every image's labels, and so the metrics, are those of
one image per step; the window loop reads nothing back from the device."""
import copy

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.eomt import build_tiny as build_tiny_eomt
from helpers.tools import REPO
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.utils._python_dispatch import TorchDispatchMode

from dinov2_seg.benchmark.dataset import mixed_sizes, write_eval_folder
from dinov2_seg.cli import test as test_tool
from dinov2_seg.cli.test import parse_args
from dinov2_seg.engine.run_config import configure_test_loader
from dinov2_seg.models.backbones import DinoViTBase
from dinov2_seg.models.segmentors import window_merge

IMAGES = 6
# Short sides 40-80 and aspect ratios 0.5-2 (ADE20K's spread, smaller).
SIZES = mixed_sizes(IMAGES, seed=3, short_side=(40, 80))


def test_generated_sizes_vary_in_both_sides_and_aspect():
    assert len(set(SIZES)) == IMAGES
    assert {h > w for h, w in SIZES} == {True, False}  # portrait, landscape
    for height, width in SIZES:
        assert 40 <= min(height, width) <= 80
        assert 0.5 <= width / height <= 2.0
    assert mixed_sizes(IMAGES, seed=3, short_side=(40, 80)) == SIZES


def write_config(tmp_path, base: str, data_root, tta: bool = False) -> str:
    """``base`` with the tiny ViT, windows of 112 (at most 3 per backbone
    call) and its test loader on the generated folder, without workers.
    The images are resized to a short side of 112 (the multi-scale flip
    test: 112 and 147, both flips)."""
    path = tmp_path / f'tiny_{base}'
    levels = 4 if 'ms' in base else 1
    resize = ("dict(type='Resize', scale=(99999999, {}), keep_ratio=True)")
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / base)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), init_cfg=None),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}] * {levels},
                     norm_cfg=dict(type='BN')),
    test_cfg=dict(crop_size=(112, 112), stride=(75, 75), window_batch_size=3))
test_pipeline = [
    dict(type='LoadImageFromFile'), {resize.format(112)},
    dict(type='DinoLoadAnnotations'), dict(type='PackSegInputs')
]
tta_scale_count = 2
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [{resize.format(112)}, {resize.format(147)}],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='DinoLoadAnnotations')], [dict(type='PackSegInputs')]])
]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(data_root)!r}, ann_file='list.txt',
                 data_prefix=dict(img_path='images',
                                  seg_map_path='annotations'),
                 pipeline=test_pipeline))
""")
    return str(path)


def random_checkpoint(config: str, path) -> str:
    """The tiny model's random weights, with BN statistics and a
    classifier that make the labels vary (a random head would predict
    nearly one class)."""
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    head = model.decode_head
    # A small running variance magnifies how the features vary over the
    # (smooth) generated images.
    head.bn.running_mean.zero_()
    head.bn.running_var.uniform_(1e-4, 1e-3)
    torch.nn.init.normal_(head.conv_seg.weight, std=1.0)
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


def run_test_tool(config: str, checkpoint: str, work_dir, *args) -> tuple:
    """tools/test.py in this process: its metrics, the label PNGs of
    ``--out`` by name, and the batch size of every backbone call."""
    calls = []

    def record(module, inputs):
        if isinstance(module, DinoViTBase):
            calls.append(inputs[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        metrics = test_tool.main([
            config, checkpoint, '--work-dir',
            str(work_dir), '--out',
            str(work_dir / 'out'), *args
        ])
    finally:
        handle.remove()
    import cv2
    labels = {
        path.stem: cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        for path in sorted((work_dir / 'out').glob('*.png'))
    }
    return metrics, labels, calls


@pytest.mark.slow  # tools/test.py twice per case, in process
@pytest.mark.parametrize(
    'base,flags,extra',
    [
        ('ade20k_vits14_linear.py', [], ''),
        # mmseg's stock slide path: its preprocessor refuses mixed sizes,
        # so they go one at a time (no padding in any window).
        ('ade20k_vits14_linear.py', ['--cfg-options'
                                     ], 'model.test_cfg.fast_inference=False'),
        # The multi-scale flip test (two scales, both flips).
        ('voc2012_vits14_ms.py', ['--tta'], ''),
    ],
    ids=['fast', 'stock', 'tta'])
def test_test_tool_batch_of_mixed_sizes_equals_one_by_one(
        tmp_path, base, flags, extra):
    reduce = base.startswith('ade20k')
    classes = 150 if reduce else 21
    root = tmp_path / 'data'
    write_eval_folder(str(root), SIZES, classes, reduce)
    config = write_config(tmp_path, base, root)
    checkpoint = random_checkpoint(config, tmp_path / 'weights.pth')
    options = [extra] if extra else []
    one, one_labels, one_calls = run_test_tool(config, checkpoint,
                                               tmp_path / 'one', *flags,
                                               *options)
    four, four_labels, four_calls = run_test_tool(config, checkpoint,
                                                  tmp_path / 'four', *flags,
                                                  *options, '--batch-size',
                                                  '4')
    assert len(one_labels) == IMAGES
    for name, labels in one_labels.items():
        assert np.array_equal(four_labels[name], labels), name
    assert four == one
    assert 0 < one['mIoU'] < 100
    # Not vacuous: the labels vary within and across the images.
    found = np.unique(np.concatenate([v.ravel() for v in one_labels.values()]))
    assert len(found) >= 2, found
    # Memory: never more than window_batch_size windows per call.
    assert max(four_calls) <= 3 and sum(four_calls) == sum(one_calls)
    if extra:  # stock: one window per call either way
        assert set(four_calls) == {1}
    else:  # the images of a step share the calls
        assert max(four_calls) == 3 and len(four_calls) < len(one_calls)


def mixed_batch(sizes, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for height, width in sizes:
        inputs.append(
            torch.randint(
                0,
                256, (3, height, width),
                dtype=torch.uint8,
                generator=generator))
        samples.append(
            SegDataSample(
                metainfo=dict(
                    ori_shape=(height, width),
                    img_shape=(height, width),
                    img_path=f'{height}x{width}')))
    return dict(inputs=inputs, data_samples=samples)


def tiny_m2f():
    from test_mask2former import tiny_model
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_m2f.py'))
    cfg.merge_from_dict(
        dict(
            model=dict(
                tiny_model(),
                test_cfg=dict(
                    crop_size=(64, 64), stride=(48,
                                                48), window_batch_size=3))))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def tiny_eomt():
    model = build_tiny_eomt().eval()
    model.test_cfg.window_batch_size = 3
    return model


@pytest.mark.parametrize(
    'build',
    # Mask2Former's pixel decoder runs mmcv's slow CPU fallback.
    [pytest.param(tiny_m2f, marks=pytest.mark.slow), tiny_eomt],
    ids=['m2f', 'eomt'])
def test_mask_segmentors_batch_mixed_sizes_as_one_by_one(build):
    """Mask2Former and EoMT take the same batched path: a step of images of
    different sizes (some smaller than a window) labels each as a step of
    that image alone, with at most window_batch_size windows per call."""
    model = build()
    # The first four have windows of the crop size; the last is shorter
    # than a window (windows of its own size, batched apart).
    sizes = [(70, 100), (100, 70), (70, 72), (70, 120), (50, 90)]
    data = mixed_batch(sizes)
    calls = []
    module = model.backbone.patch_embed  # EoMT runs the ViT's parts
    module.register_forward_pre_hook(
        lambda m, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        batched = model.test_step(copy.deepcopy(data))
        batched_calls = list(calls)
        calls.clear()
        single = []
        for image, sample in zip(data['inputs'], data['data_samples']):
            single += model.test_step(
                dict(inputs=[image], data_samples=[copy.deepcopy(sample)]))
    assert max(batched_calls) == 3 and len(batched_calls) < len(calls)
    assert sum(batched_calls) == sum(calls)
    for size, a, b in zip(sizes, batched, single):
        assert a.pred_sem_seg.data.shape[-2:] == size
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
        torch.testing.assert_close(
            a.seg_logits.data, b.seg_logits.data, rtol=0, atol=1e-5)
    # Not vacuous: the scores vary over each image (a random tiny head may
    # still prefer one class everywhere).
    for sample in single:
        assert float(sample.seg_logits.data.std(dim=(1, 2)).max()) > 1e-3


class DeviceReads(TorchDispatchMode):
    """Operators that make the host wait for a GPU: reading a value
    (``item``, ``bool``, ``int``: ``_local_scalar_dense``) and those whose
    output size depends on the values."""
    SYNCING = ('aten::_local_scalar_dense', 'aten::nonzero',
               'aten::masked_select', 'aten::_unique2',
               'aten::unique_consecutive', 'aten::unique_dim')

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.calls.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def test_window_loop_reads_nothing_back_from_the_device(monkeypatch):
    """The whole window loop (backbone, head, merge) of a step of images
    of different sizes, once their merge matrices exist: no value read
    back (it would wait for the GPU once per window), no copy to the
    host."""
    torch.manual_seed(0)
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_linear.py'))
    cfg.merge_from_dict({
        'model.backbone.arch':
        dict(TINY_ARCH, _delete_=True),
        'model.backbone.init_cfg':
        None,
        'model.decode_head.in_channels': [TINY_ARCH['embed_dim']],
        'model.decode_head.norm_cfg':
        dict(type='BN'),
        'model.test_cfg.crop_size': (56, 56),
        'model.test_cfg.stride': (37, 37),
        'model.test_cfg.window_batch_size':
        2,
    })
    model = MODELS.build(cfg.model).eval()
    views = [(torch.randn(3, h, w), dict(ori_shape=(h + 7, w - 5)))
             for h, w in [(56, 130), (100, 70), (40, 56)]]
    with torch.no_grad():
        expected = model.slide_logits(views)  # makes the merge matrices
    host_copies = []
    for name in ('cpu', 'numpy', 'tolist', 'item'):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor,
            name,
            lambda self, *a, _n=name, _f=original, **k:
            (host_copies.append(_n), _f(self, *a, **k))[1])
    windows = []
    model.backbone.register_forward_pre_hook(
        lambda m, args: windows.append(args[0].shape[0]))
    reads = DeviceReads()
    with torch.no_grad(), reads:
        logits = model.slide_logits(views)
    spans = window_merge.slide_window_spans
    assert sum(windows) == sum(  # every window of the three images
        len(spans(h, 56, 37)) * len(spans(w, 56, 37))
        for h, w in [(56, 130), (100, 70), (40, 56)]) == 3 + 6 + 1
    assert reads.calls == [] and host_copies == []
    for a, b in zip(logits, expected):
        assert torch.equal(a, b)


def test_merge_matrices_reach_a_gpu_from_pinned_memory(monkeypatch):
    """A copy from pageable memory to a GPU synchronises the stream (in
    the window loop: waits for the queued windows); the merge matrices go
    through pinned memory, without blocking."""
    seen = []
    monkeypatch.setattr(torch.Tensor, 'pin_memory',
                        lambda self: seen.append('pinned') or self.clone())
    monkeypatch.setattr(
        torch.Tensor, 'to', lambda self, *args, **kwargs: seen.append(
            (str(args[0]), kwargs.get('non_blocking', False))) or self)
    band = torch.ones(3, 4)
    window_merge.to_device(band, torch.device('cuda', 0))
    assert seen == ['pinned', ('cuda:0', True)]
    seen.clear()
    window_merge.to_device(band, torch.device('cpu'))
    assert seen == [('cpu', False)]


def test_batch_size_workers_and_pinning_of_the_test_loader():
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_linear.py'))
    assert cfg.test_dataloader.batch_size == 1
    args = parse_args(['c.py', 'w.pth', '--batch-size', '4', '--workers', '0'])
    configure_test_loader(cfg, args.batch_size, args.workers)
    loader = cfg.test_dataloader
    assert loader.batch_size == 4 and loader.num_workers == 0
    assert loader.persistent_workers is False  # torch refuses it with 0
    # Pinned memory only where there is a GPU to copy to.
    assert loader.pin_memory is torch.cuda.is_available()
    cfg.test_dataloader.pin_memory = True  # the config's choice stays
    configure_test_loader(cfg, None, 2)
    assert loader.pin_memory is True and loader.batch_size == 4
    with pytest.raises(ValueError, match='--batch-size must be >= 1'):
        configure_test_loader(cfg, 0)
