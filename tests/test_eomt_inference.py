"""EoMT inference through the batched paths against an independent
re-implementation (helpers/eomt_reference.py): slide windows, mmseg's
multi-scale flip test, amp, and EoMT's own evaluation (PIL resize of the
short side, windows spread along the long side) in the official-model
config."""
import copy
import json

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.eomt import (TINY_BLOCKS, TINY_FILE, TINY_REG,
                          build_official_tiny, build_tiny, images, load,
                          predict, reference_weights)
from helpers.eomt_reference import (class_map, eomt_forward, eomt_resized_size,
                                    eomt_semantic, normalise, pil_bilinear,
                                    slide)
from helpers.fabricate import fabricate_eomt_state
from helpers.tools import REPO
from mmcv.transforms import Compose
from mmengine.dataset import pseudo_collate
from mmseg.registry import MODELS

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.models.segmentors.window_merge import slide_window_spans


@pytest.mark.parametrize('resize_masks_first', [False, True])
def test_slide_inference_matches_the_reference(resize_masks_first):
    """Windows of 70 at stride 50 over a 70 x 120 image (2 windows), each
    window's classes x masks resized to the window, averaged: through the
    batched fast path and mmseg's stock slide inference."""
    model = build_tiny(resize_masks_first=resize_masks_first).eval()
    image = images(1, 70, 120, seed=3)[0]
    weights = reference_weights(model)

    def window_map(window):
        masks, classes = eomt_forward(
            weights,
            window,
            heads=TINY_ARCH['num_heads'],
            num_blocks=TINY_BLOCKS)[-1]
        size = window.shape[-2:] if resize_masks_first else None
        return class_map(masks, classes, size)

    with torch.no_grad():
        expected = slide(normalise(image), window_map, 70, 50)
    for fast in (True, False):
        result = predict(model, image, fast)
        torch.testing.assert_close(
            result.seg_logits.data, expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(result.pred_sem_seg.data[0],
                           result.seg_logits.data.argmax(0))


def test_multi_scale_flip_test_matches_mmseg_tta():
    """The recipe's multi-scale flip test (two scales, two flips) through
    BatchedSegTTAModel gives the labels of mmseg's own SegTTAModel over
    the stock slide inference."""
    model = build_tiny().eval()
    with torch.no_grad():  # confident queries: several classes win
        model.decode_head.cls_embed.weight.mul_(30)
        model.decode_head.mask_embed[-1].weight.mul_(30)
    pipeline = copy.deepcopy(model.cfg.tta_pipeline)
    pipeline[0] = dict(type='LoadImageFromNDArray')
    stages = pipeline[1].transforms
    # Ratios 1.0 and 1.5 of the recipe, their scales cut from a 512 to a
    # 70-pixel short side (the tiny model's windows): 2 and 6 windows.
    stages[0] = [stages[0][2], stages[0][4]]
    for resize in stages[0]:
        resize.scale = tuple(side * 70 // 512 for side in resize.scale)
    pipeline[1].transforms = [
        stage for stage in stages if stage[0].type != 'DinoLoadAnnotations'
    ]
    image = images(1, 60, 90, seed=5)[0].permute(1, 2, 0).numpy()
    data = pseudo_collate([Compose(pipeline)(dict(img=image))])
    assert len(data['inputs']) == 4
    tta = MODELS.build(dict(type='BatchedSegTTAModel', module=model))
    stock = MODELS.build(dict(type='SegTTAModel', module=model))
    with torch.no_grad():
        fast = tta.test_step(copy.deepcopy(data))[0]
        model.test_cfg.fast_inference = False
        expected = stock.test_step(copy.deepcopy(data))[0]
    assert fast.pred_sem_seg.data.shape == (1, 60, 90)
    assert torch.equal(fast.pred_sem_seg.data, expected.pred_sem_seg.data)
    # Not one class everywhere: the labels are compared for real.
    assert len(expected.pred_sem_seg.data.unique()) > 2


def test_amp_runs_the_vit_in_bfloat16_and_returns_float32():
    """test_cfg.amp: the ViT under bfloat16 autocast; the head's inputs, the
    (mask, class) logits, come back float32 and close to float32's."""
    model = build_tiny().eval()
    inputs = torch.stack([normalise(x) for x in images(2, 70, 70)])
    with torch.no_grad():
        (masks, classes), = model.extract_feat(inputs)
        dtypes = []
        model.backbone.blocks[0].attn.qkv.register_forward_hook(
            lambda module, args, out: dtypes.append(out.dtype))
        model.test_cfg.amp = 'bf16'
        (amp_masks, amp_classes), = model.extract_feat(inputs)
    assert dtypes == [torch.bfloat16]
    assert amp_masks.dtype == amp_classes.dtype == torch.float32
    torch.testing.assert_close(amp_masks, masks, atol=0.1, rtol=0.1)
    torch.testing.assert_close(amp_classes, classes, atol=0.1, rtol=0.1)
    assert not torch.equal(amp_masks, masks)  # a real bfloat16 run


# ------------------------------------ EoMT's evaluation (official config)


def official_test_pipeline(short: int):
    """The official config's test pipeline on an array, its resize scaled
    from EoMT's short side 512 to ``short``, without the labels."""
    pipeline = copy.deepcopy(
        load('ade20k_vitl14_eomt_official').test_dataloader.dataset.pipeline)
    pipeline[0] = dict(type='LoadImageFromNDArray')
    resize, = [t for t in pipeline if t['type'] == 'Resize']
    assert min(resize['scale']) == 512
    resize['scale'] = (max(resize['scale']) * short // 512, short)
    return Compose([t for t in pipeline if t['type'] != 'DinoLoadAnnotations'])


# 16:9 and 4.5:1 (mmseg's Resize scale (2048, 512) would cap the long side
# of the latter at 2048), landscape and portrait.
@pytest.mark.parametrize('size', [(720, 1280), (600, 2700), (1280, 720)])
def test_official_test_resize_is_eomts(size):
    """The short side to 512 with PIL's bilinear filter, as EoMT's
    evaluation: the same pixels."""
    image = np.random.default_rng(0).integers(
        0, 256, (*size, 3), dtype=np.uint8)
    resized = official_test_pipeline(512)(dict(img=image))['inputs']
    expected = pil_bilinear(image[..., ::-1].copy(),
                            eomt_resized_size(*size, 512))[..., ::-1]
    assert resized.shape[1:] == expected.shape[:2]
    assert np.array_equal(resized.permute(1, 2, 0).numpy(), expected)


# 16:9 (2 windows; mmseg's 64 / 48 stride rule places 3) and 4.3:1 (5
# windows over a 274-pixel long side, which the old cap would have cut),
# and a portrait image.
@pytest.mark.parametrize('size', [(90, 160), (70, 300), (160, 90)])
def test_official_config_evaluates_as_eomt(tmp_path, size):
    """configs/ade20k_vitl14_eomt_official.py at 64-pixel windows on EoMT's
    released layout (fabricated): pipeline and model give the semantic
    probabilities of EoMT's evaluation at the original size."""
    state = fabricate_eomt_state(**TINY_FILE)
    path = tmp_path / 'eomt.bin'
    torch.save(state, path)
    model = build_official_tiny()
    load_segmentor_checkpoint(model, str(path))
    image = np.random.default_rng(1).integers(
        0, 256, (*size, 3), dtype=np.uint8)
    data = pseudo_collate([official_test_pipeline(64)(dict(img=image))])
    with torch.no_grad():
        result = model.test_step(data)[0]

        def window_map(window):
            masks, classes = eomt_forward(
                state, window, heads=TINY_ARCH['num_heads'], num_blocks=2)[-1]
            return class_map(masks, classes, window.shape[-2:])

        rgb = pil_bilinear(image[..., ::-1].copy(),
                           eomt_resized_size(*size, 64))
        bgr = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
        expected = eomt_semantic(normalise(bgr), window_map, 64, size)
    assert result.seg_logits.data.shape == (150, *size)
    torch.testing.assert_close(
        result.seg_logits.data, expected, atol=1e-4, rtol=1e-4)


def test_spread_windows_need_the_fast_path():
    model = build_official_tiny()
    with pytest.raises(ValueError, match="window_rule='spread'.*fast_inf"):
        predict(model, images(1, 64, 100)[0], fast=False)


def tiny_eomt_config(tmp_path, queries: int) -> str:
    path = tmp_path / f'tiny_eomt_{queries}.py'
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'ade20k_vits14_eomt.py')!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_REG!r}), init_cfg=None),
    decode_head=dict(embed_dims={TINY_ARCH['embed_dim']},
                     num_queries={queries}, num_blocks=2,
                     mask_annealing=dict(_delete_=True, start_iters=[1, 2],
                                         end_iters=[2, 3])),
    test_cfg=dict(crop_size=(70, 70), stride=(50, 50), window_batch_size=8))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
""")
    return str(path)


def test_benchmark_times_another_config_on_the_same_images(tmp_path):
    """tools/benchmark.py --against: both models through their fast path;
    the record names the other config and describes both models."""
    from dinov2_seg.cli.benchmark import main
    measured, other = tiny_eomt_config(tmp_path,
                                       4), tiny_eomt_config(tmp_path, 40)
    out = tmp_path / 'results.jsonl'
    assert main([
        measured, '--mode', 'slide', '--size', '60', '90', '--against', other,
        '--repeat', '1', '--warmup', '0', '--device', 'cpu', '--out',
        str(out)
    ]) == 0
    record = json.loads(out.read_text())
    assert record['against'] == other
    # 36 more queries of 48 numbers in the other model.
    assert record['against_parameters'] - record['parameters'] == 36 * 48
    # Two 70-pixel windows over 60 x 90, in one backbone call.
    assert (record['windows'], record['backbone_calls']) == (2, 1)


def test_spread_window_spans():
    """EoMT's rule by hand: 1500 pixels, 512 windows -> 3 windows, 36
    pixels of overlap, 18 per gap: starts 0, 494, 988. With 640 windows
    over 4481 pixels EoMT's float step truncates the last start to 3840,
    one short of 4481 - 640; the window then ends at the border."""
    assert slide_window_spans(1500, 512, 341, 'spread') == [(0, 512),
                                                            (494, 1006),
                                                            (988, 1500)]
    assert slide_window_spans(1024, 512, 341, 'spread') == [(0, 512),
                                                            (512, 1024)]
    assert slide_window_spans(512, 512, 341, 'spread') == [(0, 512)]
    spans = slide_window_spans(4481, 640, 1, 'spread')
    assert len(spans) == 8 and spans[-1] == (3841, 4481)
    with pytest.raises(ValueError, match="window_rule='even'"):
        slide_window_spans(100, 50, 25, 'even')


def test_layer_norm_2d_normalises_each_pixel_over_its_channels():
    from dinov2_seg.models.decode_heads.eomt_head import ScaleBlock
    from dinov2_seg.models.layers import LayerNorm2d
    norm = ScaleBlock(2).norm
    assert isinstance(norm, LayerNorm2d) and norm.eps == 1e-6
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.0, 10.0]))
    # Pixel (0, 0): channels 1 and 3 (mean 2, variance 1); pixel (0, 1):
    # 5 and 5 (variance 0).
    x = torch.tensor([[[[1.0, 5.0]], [[3.0, 5.0]]]])
    scale = 1 / (1 + 1e-6)**0.5
    torch.testing.assert_close(
        norm(x), torch.tensor([[[[-2 * scale, 0.0]], [[10 + scale, 10.0]]]]))
