"""The CUDA paths, checked on a lent GPU machine by tools/gpu_check.sh
(``pytest -m gpu``; the normal suite deselects these tests): every model
family's forward in float32 and under bfloat16 autocast against the same
model in float32 on the CPU, ``--compile`` against eager, a step of 8
images against one image per step, and a training iteration of each head
type with ``--amp``.

The device under test is ``GPU_CHECK_DEVICE`` (default cuda).
``tools/gpu_check.sh --rehearse`` sets it to cpu, so that the same logic
runs in the suite: the comparisons then hold CPU against CPU (bfloat16 is
the CPU's autocast), and the CUDA-only parts are named where they are
left out.

Tolerances (random weights, decisive heads: helpers/gpu_families.py):
- logits: in float32 (TF32 off) the largest difference at most 1e-3 of the
  largest CPU logit; in bf16 the mean difference at most 5% of the mean
  absolute CPU logit;
- labels: at least 99.9% (float32) / 99% (bf16) of the pixels whose CPU
  top-2 margin exceeds four times that tolerance (at least 60% of them)
  as on the CPU, and at least 99.9% / 95% of all pixels (random weights
  leave some pixels within rounding of a tie).
"""
import copy
import os
from functools import lru_cache

import pytest
import torch
from helpers.gpu_families import (FAMILIES, TTA_PIPELINE, linear, m2f,
                                  on_device, step_data, training_data,
                                  tta_model)
from mmengine.optim import build_optim_wrapper

from dinov2_seg.benchmark.dataset import mixed_sizes
from dinov2_seg.engine.run_config import enable_amp

DEVICE = os.environ.get('GPU_CHECK_DEVICE', 'cuda')
CUDA = DEVICE == 'cuda'
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        CUDA and not torch.cuda.is_available(),
        reason='no CUDA device (GPU_CHECK_DEVICE=cpu rehearses on the CPU)')
]
AGREEMENT = {'fp32': 0.999, 'bf16': 0.99}
OVERALL = {'fp32': 0.999, 'bf16': 0.95}


@pytest.fixture(autouse=True)
def no_tf32():
    """Float32 products in float32 (cuDNN's convolutions default to TF32,
    whose 10-bit mantissa the float32 tolerance would not hold)."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved


@lru_cache(maxsize=None)
def reference(family: str):
    """The family's tiny model, a test step and the model's float32 CPU
    prediction of it (built once per family for both precisions)."""
    build, sizes = FAMILIES[family]
    model = build()
    tta = family.endswith('_tta')
    data = step_data(sizes, TTA_PIPELINE if tta else None)
    return model, data, tta, predict(model, data, tta)


def predict(model, data: dict, tta: bool) -> list:
    """``test_step``; the multi-scale flip test through mmseg's TTA model
    built around the segmentor, as tools/test.py --tta does."""
    runner = tta_model(model) if tta else model
    with torch.no_grad():
        return runner.test_step(copy.deepcopy(data))


def agreement(got: list, want: list) -> float:
    same = total = 0
    for a, b in zip(got, want):
        same += int((a.pred_sem_seg.data.cpu() == b.pred_sem_seg.data).sum())
        total += b.pred_sem_seg.data.numel()
    return same / total


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_forward_agrees_with_the_cpu(family, precision):
    model, data, tta, want = reference(family)
    device_model = on_device(model, DEVICE)
    device_model.test_cfg.amp = precision == 'bf16'
    got = predict(device_model, data, tta)
    same = total = sure_same = sure_total = 0
    for a, b in zip(got, want):
        ours, theirs = a.seg_logits.data.float().cpu(), b.seg_logits.data
        assert ours.shape == theirs.shape
        error = (ours - theirs).abs()
        if precision == 'fp32':
            limit = 1e-3 * float(theirs.abs().max())
            assert float(error.max()) <= limit, (family, float(error.max()))
        else:
            limit = 0.05 * float(theirs.abs().mean())
            assert float(error.mean()) <= limit, (family, float(error.mean()))
        matches = a.pred_sem_seg.data.cpu()[0] == b.pred_sem_seg.data[0]
        sure = decided(theirs, 4 * limit)
        same, total = same + int(matches.sum()), total + matches.numel()
        sure_same += int(matches[sure].sum())
        sure_total += int(sure.sum())
    print(f'{family} {precision} on {DEVICE}: labels {same / total:.5f}, '
          f'{sure_same / sure_total:.5f} of the {sure_total / total:.3f} '
          'decided (margin over 4x the tolerance)')
    # Random weights put some pixels within rounding of a tie: the
    # thresholds hold where the CPU's margin exceeds four times the logits'
    # tolerance, and most pixels are such; a broken kernel fails by far.
    assert sure_total >= 0.6 * total, (family, sure_total / total)
    assert sure_same >= AGREEMENT[precision] * sure_total, family
    assert same >= OVERALL[precision] * total, family
    # Not vacuous: the reference labels vary.
    labels = torch.cat([b.pred_sem_seg.data.flatten() for b in want])
    assert len(labels.unique()) >= 2, family


def decided(logits: torch.Tensor, margin: float) -> torch.Tensor:
    top2 = logits.topk(2, dim=0).values
    return (top2[0] - top2[1]) > margin


def test_compiled_backbone_equals_eager():
    """``--compile`` (inductor on CUDA). The rehearsal traces the same
    graphs with Dynamo but runs them eagerly (backend='eager'): inductor on
    the CPU is tests/test_compile.py's, and too slow for the rehearsal."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    eager = on_device(linear(), DEVICE)
    compiled = on_device(eager, DEVICE)
    compiled.test_cfg.compile = True if CUDA else dict(backend='eager')
    for seed, sizes in enumerate([[(56, 100), (80, 56)], [(90, 60)]]):
        data = step_data(sizes, seed=seed)
        with torch.no_grad():
            want = eager.test_step(copy.deepcopy(data))
            got = compiled.test_step(copy.deepcopy(data))
        for a, b in zip(got, want):
            ours, theirs = a.seg_logits.data, b.seg_logits.data
            scale = float(theirs.abs().max())
            assert float((ours - theirs).abs().max()) <= 1e-3 * scale
            sure = decided(theirs, 1e-3 * scale)
            assert float(sure.float().mean()) > 0.98
            assert torch.equal(a.pred_sem_seg.data[0][sure],
                               b.pred_sem_seg.data[0][sure])
    assert counters['stats']['unique_graphs'] > 0  # it did compile


@pytest.mark.parametrize('family', [
    'dinov2_linear',
    pytest.param(
        'eomt_dinov3',
        marks=pytest.mark.skipif(
            not CUDA,
            reason='20 s on the CPU; the same batching code as '
            'the linear model (tests/test_eval_batching.py on the CPU)'))
])
def test_step_of_8_images_labels_as_one_by_one(family):
    """Batched evaluation: 8 images of mixed sizes in one test step (their
    windows share backbone calls of 8) label every pixel as 8 steps of
    one image, wherever the scores are not a near tie."""
    model = on_device(FAMILIES[family][0](), DEVICE)
    sizes = mixed_sizes(8, seed=4, short_side=(64, 96))
    data = step_data(sizes)
    with torch.no_grad():
        batched = model.test_step(copy.deepcopy(data))
        single = []
        for image, sample in zip(data['inputs'], data['data_samples']):
            single += model.test_step(
                dict(inputs=[image], data_samples=[copy.deepcopy(sample)]))
    for size, a, b in zip(sizes, batched, single):
        assert a.pred_sem_seg.data.shape[-2:] == size
        logits = b.seg_logits.data
        sure = decided(logits, 1e-4 * float(logits.abs().max()))
        assert float(sure.float().mean()) > 0.99
        assert torch.equal(a.pred_sem_seg.data[0][sure],
                           b.pred_sem_seg.data[0][sure])


HEADS = {
    'linear': (linear, True),
    'ms': (lambda: linear('ade20k_vits14_ms', levels=4), True),
    'mask2former': (m2f, True),
    'eomt': (FAMILIES['eomt_dinov2'][0], False),
}


@pytest.mark.parametrize('head', sorted(HEADS))
def test_training_iteration_with_amp(head):
    """One ``--amp`` training step (mmengine's AmpOptimWrapper, float16
    with a dynamic loss scale; the rehearsal: the plain wrapper, which
    AmpOptimWrapper refuses on a CPU): finite losses, the head learns and
    a frozen backbone stays as it was."""
    build, frozen = HEADS[head]
    model = on_device(build(), DEVICE).train()
    cfg = copy.deepcopy(model.cfg)
    if CUDA:
        enable_amp(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    crop = tuple(model.test_cfg.crop_size)
    classes = model.decode_head.num_classes
    if hasattr(model.decode_head, 'set_iteration'):  # EoMT's annealing
        model.decode_head.set_iteration(0)
    losses = model.train_step(training_data(2, crop, classes), wrapper)
    assert losses and all(
        bool(torch.isfinite(v).all()) for v in losses.values()), losses
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(after[k], v)}
    assert any(k.startswith('decode_head.') for k in changed), head
    backbone = {k for k in changed if k.startswith('backbone.')}
    if frozen:
        assert not backbone, sorted(backbone)[:5]
    else:  # EoMT fine-tunes the ViT
        assert backbone
