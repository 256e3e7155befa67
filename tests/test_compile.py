"""``--compile``: the backbone through torch.compile (inductor) gives the
eager labels, and images of other sizes compile nothing new (the windows
have the crop size; only the batch dimension varies, and it is
dynamic)."""
import copy

import pytest
import torch
from helpers.tools import REPO
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch._dynamo.utils import counters

from dinov2_seg.engine.run_config import enable_test_compile
from dinov2_seg.models.segmentors.window_merge import slide_window_spans

# The smallest DINOv2 that still has every part (depth 2, width 32).
ARCH = dict(
    embed_dim=32,
    depth=2,
    num_heads=2,
    ffn='mlp',
    num_register_tokens=0,
    interpolate_offset=0.1,
    interpolate_antialias=False)


def tiny_linear(**test_cfg) -> torch.nn.Module:
    return linear_model('ade20k_vits14_linear.py', ARCH, (56, 56), (37, 37), {
        'model.backbone.out_indices': [0, 1],
        'model.decode_head.in_index': [1]
    }, **test_cfg)


def linear_model(config: str, arch: dict, crop_size: tuple, stride: tuple,
                 options: dict, **test_cfg) -> torch.nn.Module:
    """``configs/CONFIG`` with a random ``arch`` backbone and a head whose
    labels vary (small BN variances, wide class weights)."""
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cfg.merge_from_dict({
        'model.backbone.arch':
        dict(arch, _delete_=True),
        'model.backbone.init_cfg':
        None,
        'model.decode_head.in_channels': [arch['embed_dim']],
        'model.decode_head.norm_cfg':
        dict(type='BN'),
        'model.test_cfg':
        dict(
            crop_size=crop_size,
            stride=stride,
            window_batch_size=2,
            **test_cfg),
        **options
    })
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    head = model.decode_head
    head.bn.running_var.uniform_(1e-3, 1e-2)  # varied labels
    torch.nn.init.normal_(head.conv_seg.weight, std=1.0)
    return model


def assert_same_predictions(got: list, want: list) -> None:
    """Compiled results ``got`` equal eager ``want``: logits within 1e-4,
    labels equal wherever the eager top-2 margin exceeds 1e-3 (at least
    98% of pixels), and more than two classes predicted (not vacuous)."""
    for a, b in zip(got, want):
        torch.testing.assert_close(
            a.seg_logits.data, b.seg_logits.data, rtol=0, atol=1e-4)
        scores = b.seg_logits.data
        top2 = scores.topk(2, dim=0).values
        decided = (top2[0] - top2[1]) > 1e-3
        assert decided.float().mean() > 0.98
        same = a.pred_sem_seg.data[0] == b.pred_sem_seg.data[0]
        assert bool(same[decided].all())
    assert len(want[0].pred_sem_seg.data.unique()) > 2


def step_data(sizes, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[
            torch.randint(
                0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
            for h, w in sizes
        ],
        data_samples=[
            SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w)))
            for h, w in sizes
        ])


def windows(sizes) -> int:
    return sum(
        len(slide_window_spans(h, 56, 37)) *
        len(slide_window_spans(w, 56, 37)) for h, w in sizes)


@pytest.mark.slow  # inductor compiles C++ kernels on the CPU
def test_compiled_backbone_equals_eager_and_compiles_once_per_batch_kind():
    eager = tiny_linear()
    compiled = tiny_linear(compile=True)
    compiled.load_state_dict(eager.state_dict())
    # Steps of images of different sizes (all sides >= the 56 window):
    # windows per step 9 (2+2+2+2+1 per call), 5 and 21.
    steps = [[(56, 100), (80, 56), (60, 70)], [(70, 90), (56, 56)],
             [(90, 60), (100, 100), (57, 140)]]
    assert [windows(sizes) for sizes in steps] == [9, 5, 21]
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for index, sizes in enumerate(steps):
        data = step_data(sizes, index)
        with torch.no_grad():
            want = eager.test_step(copy.deepcopy(data))
            got = compiled.test_step(copy.deepcopy(data))
        graphs.append(counters['stats']['unique_graphs'])
        assert_same_predictions(got, want)
    # The first step compiled the batch of 2 (dynamic) and the batch of 1;
    # the later steps, other image sizes and window counts, nothing.
    assert graphs[0] > 0 and graphs[1:] == [graphs[0]] * 2
    # The training path (gradients on) stays eager; the weights keep their
    # names.
    with torch.enable_grad():
        compiled.backbone(torch.randn(3, 3, 56, 56))
    assert counters['stats']['unique_graphs'] == graphs[0]
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_compile_flag_sets_the_test_cfg_of_batched_segmentors():
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_ms.py'))
    enable_test_compile(cfg, 'ms.py')
    assert cfg.model.test_cfg.compile is True
    cfg.model.type = 'EncoderDecoder'
    with pytest.raises(ValueError, match="model.type='EncoderDecoder'"):
        enable_test_compile(cfg, 'ms.py')


# ------------------------------------------------------------------ DINOv3

# The smallest DINOv3 with every part (RoPE, 4 storage tokens, masked key
# bias): depth 2, width 32 (head dim 16).
V3_ARCH = dict(embed_dim=32, depth=2, num_heads=2)


def tiny_dinov3_linear(**test_cfg) -> torch.nn.Module:
    return linear_model('dinov3/ade20k_vits16_linear.py', V3_ARCH, (64, 64),
                        (48, 48), {}, **test_cfg)


def test_dinov3_forward_has_no_graph_break():
    """Dynamo traces the DINOv3 ViT's inference forward whole, before and
    after an eager call has filled the RoPE table cache (keyed on the
    periods buffer's data pointer, which Dynamo cannot trace: 4 breaks
    once it is filled, before the fix): compiled code computes the tables
    inside its graph."""
    backbone = tiny_dinov3_linear().backbone
    x = torch.randn(2, 3, 64, 80)
    breaks = []
    with torch.no_grad():
        for _ in range(2):  # then with the cache filled by the eager call
            torch._dynamo.reset()
            explanation = torch._dynamo.explain(backbone.forward)(x)
            breaks.append(
                (explanation.graph_count, explanation.graph_break_count,
                 explanation.break_reasons))
            backbone(x)
    assert [b[:2] for b in breaks] == [(1, 0), (1, 0)], breaks


@pytest.mark.parametrize(
    'backend',
    ['eager', pytest.param('inductor', marks=pytest.mark.slow)])
def test_dinov3_compiled_labels_equal_eager(backend):
    """``test_cfg.compile`` on a DINOv3 linear model, through Dynamo only
    (``eager``) and with inductor's kernels: the eager labels."""
    eager = tiny_dinov3_linear()
    compiled = tiny_dinov3_linear(compile=dict(backend=backend))
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    # Eager: 3 + 2 windows, calls of 2 (a dynamic batch) and of 1;
    # inductor, whose C++ compiles are slow: one window.
    sizes = [(64, 112), (80, 64)] if backend == 'eager' else [(64, 64)]
    data = step_data(sizes, 0)
    with torch.no_grad():
        want = eager.test_step(copy.deepcopy(data))
        got = compiled.test_step(copy.deepcopy(data))
    assert_same_predictions(got, want)
