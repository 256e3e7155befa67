"""The full model built from top-level configs predicts what the official
mmseg 0.x pipeline predicts with the same (fabricated) Meta files.

The reference below re-implements that pipeline from its formulas: keep-ratio
rescale (mmcv's rule, cv2 bilinear), normalisation, the multi-scale ratios
applied to the (99999999, 640) base scale, horizontal flip, sliding windows,
center padding to 14 inside the backbone, BN head, logits resized to each
window, window averaging, resize to the original size, softmax, un-flip and
averaging of probabilities over the augmentations.
"""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.fabricate import fabricate_head_file, fabricate_official_file
from helpers.reference import reference_features
from helpers.tools import REPO

from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
from dinov2_seg.models.backbones import ARCH_SETTINGS

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
DEPTH = 4  # ViT-S width and heads; fewer blocks keep the 40-window ms test
# affordable on 2 CPU cores (the linear test uses all 12).


def rescale(image, scale):
    height, width = image.shape[:2]
    factor = min(
        max(scale) / max(height, width),
        min(scale) / min(height, width))
    size = (int(width * factor + 0.5), int(height * factor + 0.5))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def head_logits(backbone, head, window, blocks, in_index):
    feats = reference_features(backbone, window, 6, 0, 0.1, False, blocks)
    x = torch.cat([feats[i] for i in in_index], 1)
    mean, var = head['decode_head.bn.running_mean'], head[
        'decode_head.bn.running_var']
    x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
    x = x * head['decode_head.bn.weight'][:, None, None] + head[
        'decode_head.bn.bias'][:, None, None]
    logits = F.conv2d(x, head['decode_head.conv_seg.weight'],
                      head['decode_head.conv_seg.bias'])
    return F.interpolate(
        logits, size=window.shape[2:], mode='bilinear', align_corners=False)


def slide(backbone, head, image, crop, stride, blocks, in_index, classes):
    _, _, height, width = image.shape
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    total = torch.zeros(1, classes, height, width)
    count = torch.zeros(1, 1, height, width)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop,
                         height), min(c * stride + crop, width)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            window = image[:, :, y1:y2, x1:x2]
            total[:, :, y1:y2, x1:x2] += head_logits(backbone, head, window,
                                                     blocks, in_index)
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def official_probabilities(image, backbone, head, scales, flips, crop, stride,
                           blocks, in_index, classes):
    height, width = image.shape[:2]
    probs = torch.zeros(1, classes, height, width)
    for scale in scales:
        resized = rescale(image, scale)[..., ::-1]  # BGR -> RGB
        tensor = torch.from_numpy(
            ((resized - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]
        for flip in flips:
            x = tensor.flip(3) if flip else tensor
            logits = slide(backbone, head, x, crop, stride, blocks, in_index,
                           classes)
            logits = F.interpolate(
                logits,
                size=(height, width),
                mode='bilinear',
                align_corners=False)
            p = logits.softmax(1)
            probs += p.flip(3) if flip else p
    return (probs / (len(scales) * len(flips)))[0]


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    """A non-square photo-like image whose sides are not multiples of 14."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:97, 0:131]
    base = np.stack([rows * 2, cols * 1.5, (rows + cols)], -1)
    noisy = base + rng.normal(0, 25, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def compare(labels, probs):
    top2 = probs.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4
    assert decided.float().mean() > 0.99  # the comparison is not vacuous
    want = probs.argmax(0)
    assert labels.shape == tuple(want.shape)
    same = torch.from_numpy(labels) == want
    assert bool(same[decided].all()), (
        f'{int((~same & decided).sum())} decided pixels differ')
    # Random weights still give a varied map, so the check has teeth.
    assert len(np.unique(labels)) > 3


@pytest.mark.slow  # end to end at full ViT-S size
def test_linear_recipe_matches_official(tmp_path, image):
    backbone = fabricate_official_file('vits14', tmp_path / 'b.pth', seed=1)
    head = fabricate_head_file(tmp_path / 'h.pth', 384, 1, 150, seed=2)
    model = init_segmentor(
        str(REPO / 'configs' / 'ade20k_vits14_linear.py'),
        checkpoint=str(tmp_path / 'h.pth'),
        backbone=str(tmp_path / 'b.pth'))
    labels = inference_segmentor(model, image)
    with torch.no_grad():
        probs = official_probabilities(
            image,
            backbone,
            head,
            scales=[(2048, 512)],
            flips=[False],
            crop=512,
            stride=341,
            blocks=[8, 9, 10, 11],
            in_index=[3],
            classes=150)
    compare(labels, probs)


@pytest.mark.slow  # end to end at full ViT-S size
def test_ms_recipe_three_scales_and_flip_match_official(tmp_path, image):
    backbone = fabricate_official_file(
        'vits14', tmp_path / 'b.pth', depth=DEPTH, seed=3)
    head = fabricate_head_file(tmp_path / 'h.pth', 384, 4, 21, seed=4)
    arch = dict(ARCH_SETTINGS['vits14'], depth=DEPTH)
    model = init_segmentor(
        str(REPO / 'configs' / 'voc2012_vits14_ms.py'),
        checkpoint=str(tmp_path / 'h.pth'),
        backbone=str(tmp_path / 'b.pth'),
        scales=3,
        cfg_options={'model.backbone.arch': dict(arch, _delete_=True)})
    labels = inference_segmentor(model, image)
    ratios = [1.0, 1.32, 1.73]
    with torch.no_grad():
        probs = official_probabilities(
            image,
            backbone,
            head,
            scales=[(int(99999999 * r), int(640 * r)) for r in ratios],
            flips=[False, True],
            crop=640,
            stride=320,
            blocks=list(range(DEPTH)),
            in_index=[0, 1, 2, 3],
            classes=21)
    compare(labels, probs)


def test_scale_count_is_bounded(tmp_path):
    with pytest.raises(ValueError, match='choose 1..5'):
        init_segmentor(
            str(REPO / 'configs' / 'voc2012_vits14_ms.py'),
            scales=6,
            cfg_options={'model.backbone.init_cfg': None})


@pytest.mark.slow  # end to end at full ViT-S size
def test_mixed_precision_labels_agree_with_float32(tmp_path, image):
    """--amp (bfloat16 on CPU and on GPUs that have it) changes at most 0.5%
    of the labels of the linear fidelity case."""
    fabricate_official_file('vits14', tmp_path / 'b.pth', seed=1)
    fabricate_head_file(tmp_path / 'h.pth', 384, 1, 150, seed=2)
    labels = {}
    for amp in (False, True):
        model = init_segmentor(
            str(REPO / 'configs' / 'ade20k_vits14_linear.py'),
            checkpoint=str(tmp_path / 'h.pth'),
            backbone=str(tmp_path / 'b.pth'),
            amp=amp)
        calls = []
        model.backbone.blocks[0].attn.qkv.register_forward_hook(
            lambda module, args, out: calls.append(out.dtype))
        labels[amp] = inference_segmentor(model, image)
        # One call per window on CPU (two windows of 512 over the image).
        assert calls == [torch.bfloat16 if amp else torch.float32] * 2
    agreement = (labels[True] == labels[False]).mean()
    assert 0.995 <= agreement < 1.0  # a real bfloat16 run, close to fp32
