"""Multi-scale deformable attention (ViT-Adapter, Mask2Former's pixel
decoder) samples in float32 under autocast, and CUDA tensors go to mmcv's
PyTorch version when mmcv has no compiled CUDA kernel."""
import warnings

import pytest
import torch
from helpers.archs import TINY_SWIGLU_ARCH
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops.multi_scale_deform_attn import \
    multi_scale_deformable_attn_pytorch as forward_pytorch_name

from dinov2_seg.models import deformable_attention
from dinov2_seg.models.backbones import DinoViTAdapter

SHAPES = torch.tensor([[6, 8], [3, 4]])
STARTS = torch.tensor([0, 48])


@pytest.fixture
def sampled_dtypes(monkeypatch):
    """The dtypes of (value, sampling locations, attention weights) of
    every call of mmcv's PyTorch deformable attention."""
    seen = []
    original = deformable_attention.pytorch_kernel

    def record(value, shapes, locations, weights):
        seen.append((value.dtype, locations.dtype, weights.dtype))
        return original(value, shapes, locations, weights)

    monkeypatch.setattr(deformable_attention, 'pytorch_kernel', record)
    return seen


def test_adapter_samples_float32_under_bfloat16_autocast(sampled_dtypes):
    """As BatchedEncoderDecoder runs the backbone under test_cfg.amp."""
    torch.manual_seed(0)
    adapter = DinoViTAdapter(
        arch=TINY_SWIGLU_ARCH,
        deform_num_heads=2,
        conv_inplane=16,
        deform_ratio=0.5,
        norm_cfg=dict(type='BN')).eval()
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        outs = adapter(torch.randn(1, 3, 64, 96))
    assert len(outs) == 4
    # Two extractors per interaction stage (4) and the injectors: every
    # call float32.
    assert len(sampled_dtypes) >= 8
    assert set(sampled_dtypes) == {(torch.float32, ) * 3}


def test_pixel_decoder_attention_samples_float32(sampled_dtypes):
    """mmcv's MultiScaleDeformableAttention as mmdet's pixel decoder builds
    it: float32 sampling, a float32 output close to float32's."""
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(
        embed_dims=32, num_heads=4, num_levels=2, batch_first=True).eval()
    query = torch.randn(1, 60, 32)
    points = torch.rand(1, 60, 2, 2)
    kwargs = dict(
        reference_points=points,
        spatial_shapes=SHAPES,
        level_start_index=STARTS)
    with torch.no_grad():
        full = attention(query, **kwargs)
        with torch.autocast('cpu', torch.bfloat16):
            mixed = attention(query, **kwargs)
    assert set(sampled_dtypes) == {(torch.float32, ) * 3}
    assert torch.allclose(mixed.float(), full, atol=0.05)


def inputs(dtype):
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(1, 60, 2, 8, generator=generator).to(dtype)
    locations = torch.rand(1, 10, 2, 2, 4, 2, generator=generator).to(dtype)
    weights = torch.rand(1, 10, 2, 2, 4, generator=generator).softmax(-1)
    return value, locations, weights.to(dtype)


def test_missing_cuda_kernel_selects_the_pytorch_version(monkeypatch):
    """CUDA tensors reach this function; with the kernel reported missing
    it returns mmcv's PyTorch result on float32 inputs, with a warning."""
    monkeypatch.setattr(deformable_attention, 'cuda_kernel_compiled',
                        lambda: False)
    value, locations, weights = inputs(torch.bfloat16)
    with pytest.warns(UserWarning, match='without its CUDA ops'):
        out = deformable_attention.Float32DeformableAttnFunction.apply(
            value, SHAPES, STARTS, locations, weights, 64)
    expected = forward_pytorch_name(value.float(), SHAPES, locations.float(),
                                    weights.float())
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)


def test_compiled_cuda_kernel_gets_float32_inputs(monkeypatch):
    calls = []

    class Kernel:

        @staticmethod
        def apply(value, shapes, starts, locations, weights, step):
            calls.append((value.dtype, locations.dtype, weights.dtype, step))
            return value.new_zeros(1)

    monkeypatch.setattr(deformable_attention, 'cuda_kernel_compiled',
                        lambda: True)
    monkeypatch.setattr(deformable_attention, 'MMCV_CUDA_FUNCTION', Kernel)
    value, locations, weights = inputs(torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        deformable_attention.Float32DeformableAttnFunction.apply(
            value, SHAPES, STARTS, locations, weights, 64)
    assert calls == [(torch.float32, torch.float32, torch.float32, 64)]


def test_mmcv_forward_dispatches_through_the_replacements():
    """mmcv's forward looks both kernels up in its module at call time."""
    from mmcv.ops import multi_scale_deform_attn as module
    assert module.MultiScaleDeformableAttnFunction is \
        deformable_attention.Float32DeformableAttnFunction
    assert module.multi_scale_deformable_attn_pytorch is \
        deformable_attention.float32_pytorch_kernel
