"""Every model family of the project at a tiny size, from its real config
(same modules and code paths), for the device checks of tests/test_gpu.py:
built once on the CPU with seeded random weights, then copied to the
device under test."""
import copy
from typing import Callable, Dict, List, Tuple

import torch
from helpers.archs import TINY_ARCH
from helpers.tools import REPO
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from dinov2_seg.benchmark.inputs import build_for_benchmark, synthetic_image

TINY_V3 = dict(embed_dim=48, depth=4, num_heads=3)
LINEAR_WINDOW = dict(crop_size=(56, 56), stride=(37, 37), window_batch_size=8)
WINDOW_64 = dict(crop_size=(64, 64), stride=(48, 48), window_batch_size=8)


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def decisive_bn_head(model: torch.nn.Module) -> torch.nn.Module:
    """A linear head whose classes differ clearly and vary over an image
    (a random head predicts nearly one class, with ties that any rounding
    flips): its BatchNorm statistics those of the features of a synthetic
    image, its classifier of unit weights."""
    head = model.decode_head
    seen = []
    hook = head.bn.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].transpose(0, 1).flatten(1)))
    with torch.no_grad():
        model.test_step(step_data([(80, 100)], seed=11))
        hook.remove()
        features = torch.cat(seen, 1)
        head.bn.running_mean.copy_(features.mean(1))
        head.bn.running_var.copy_(features.var(1))
        torch.nn.init.normal_(head.conv_seg.weight, std=1.0)
    return model


def decisive_mask_head(model: torch.nn.Module) -> torch.nn.Module:
    """Mask2Former / EoMT: queries that prefer different classes clearly,
    with masks that vary over the image (at the initialisation's scale
    every query has nearly the same class distribution and a mask of
    about 0.5 everywhere: one class everywhere)."""
    head = model.decode_head
    with torch.no_grad():
        classes = head.cls_embed
        torch.nn.init.normal_(
            classes.weight, std=4.0 / classes.in_features**0.5)
        head.mask_embed[-1].weight.mul_(10)
        head.mask_embed[-1].bias.zero_()
    if hasattr(head, 'pixel_decoder'):
        # Mask2Former's per-pixel features share a large mean (after GN and
        # ReLU): mask embeddings orthogonal to it make the masks follow
        # what varies over the image.
        seen = []
        hook = head.pixel_decoder.register_forward_hook(
            lambda module, args, out: seen.append(out[0].transpose(0, 1).
                                                  flatten(1)))
        with torch.no_grad():
            model.test_step(step_data([(64, 64)], seed=11))
            hook.remove()
            mean = torch.cat(seen, 1).mean(1)
            mean = mean / mean.norm()
            last = head.mask_embed[-1]
            last.weight.sub_(mean[:, None] * (mean @ last.weight)[None])
            last.bias.sub_(mean * (mean @ last.bias))
            last.weight.mul_(10)
    return model


def built(cfg: Config, init: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_for_benchmark(cfg, 'cpu', None)
    if init:
        model.init_weights()
    model.cfg = cfg
    if hasattr(model.decode_head, 'cls_embed'):
        decisive_mask_head(model)
    return model.eval()


def linear(name='ade20k_vits14_linear',
           levels=1,
           arch=TINY_ARCH,
           window=LINEAR_WINDOW,
           channels=48):
    cfg = load(name)
    cfg.merge_from_dict({
        'model.backbone.arch': dict(arch, _delete_=True),
        'model.decode_head.in_channels': [channels] * levels,
        # Few classes, as the tiny mask heads: the margins between the
        # best two of 150 random scores are mostly far below bf16's
        # rounding, those of 5 are not.
        'model.decode_head.num_classes': 5,
    })
    cfg.model.test_cfg.update(window)
    if 'depth' in arch and 'vits14' in name:
        cfg.model.backbone.out_indices = [0, 1, 2, 3]
        cfg.model.decode_head.in_index = list(range(4 - levels, 4))
    return decisive_bn_head(built(cfg))


def ms_tta() -> torch.nn.Module:
    """The ms recipe's segmentor; its multi-scale flip test (two scales,
    both flips) is built around it by :func:`tta_model`."""
    return linear('ade20k_vits14_ms', levels=4)


def tta_model(segmentor: torch.nn.Module) -> torch.nn.Module:
    from mmseg.registry import MODELS
    return MODELS.build(dict(segmentor.cfg.tta_model, module=segmentor))


TTA_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[[
            dict(type='Resize', scale=(99999999, s), keep_ratio=True)
            for s in (56, 74)
        ],
                    [
                        dict(
                            type='RandomFlip', prob=p, direction='horizontal')
                        for p in (0., 1.)
                    ], [dict(type='PackSegInputs')]])
]


def m2f(name='ade20k_vits14_m2f', arch=TINY_ARCH) -> torch.nn.Module:
    from test_mask2former import tiny_model
    cfg = load(name)
    settings = tiny_model()
    settings['backbone']['arch'] = dict(arch, _delete_=True)
    cfg.merge_from_dict(dict(model=dict(settings, test_cfg=WINDOW_64)))
    return built(cfg, init=True)


def dinov2_adapter() -> torch.nn.Module:
    """Meta's ViT-g + ViT-Adapter + Mask2Former layout, shrunk."""
    from test_meta_m2f import OFFICIAL_CFG, small_options
    cfg = Config.fromfile(OFFICIAL_CFG)
    cfg.merge_from_dict(small_options())
    cfg.model.test_cfg.update(WINDOW_64)
    return built(cfg)


def dinov3_adapter() -> torch.nn.Module:
    from test_dinov3_m2f_official import small_options
    cfg = load('dinov3/ade20k_vits16_m2f_adapter')
    # 16 deformable heads of 2 channels (Meta's count), one encoder layer.
    cfg.merge_from_dict(
        small_options(dim=64, vit_heads=2, hidden=32, ffn=64, classes=5))
    cfg.merge_from_dict({
        'model.decode_head.pixel_decoder.encoder.num_layers': 1,
        'model.decode_head.transformer_decoder.num_layers': 2
    })
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.test_cfg.update(WINDOW_64)
    return built(cfg, init=True)


def eomt_dinov2() -> torch.nn.Module:
    from helpers.eomt import build_tiny
    model = build_tiny().eval()
    model.test_cfg.window_batch_size = 8
    return decisive_mask_head(model)


def eomt_dinov3() -> torch.nn.Module:
    from test_dinov3_eomt import build_tiny
    model = build_tiny(size=(64, 64)).eval()
    model.test_cfg.update(stride=(48, 48), window_batch_size=8)
    return decisive_mask_head(model)


# name: (builder, image sizes of a test step)
SIZES = [(64, 90)]
FAMILIES: Dict[str, Tuple[Callable[[], torch.nn.Module], List[tuple]]] = {
    'dinov2_linear': (linear, SIZES),
    'dinov2_ms_tta': (ms_tta, [(40, 50)]),
    'dinov3_vit_linear': (lambda: linear(
        'dinov3/ade20k_vits16_linear', arch=TINY_V3, window=WINDOW_64), SIZES),
    'dinov3_convnext_linear': (lambda: linear(
        'dinov3/ade20k_convnext_tiny_linear',
        arch=dict(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]),
        window=WINDOW_64,
        channels=32), SIZES),
    'm2f_dinov2_pyramid': (m2f, SIZES),
    'm2f_dinov3_pyramid':
    (lambda: m2f('dinov3/ade20k_vits16_m2f', TINY_V3), SIZES),
    'dinov2_adapter_m2f': (dinov2_adapter, SIZES),
    'dinov3_adapter_m2f': (dinov3_adapter, SIZES),
    'eomt_dinov2': (eomt_dinov2, [(70, 100)]),
    'eomt_dinov3': (eomt_dinov3, SIZES),
}


def step_data(sizes, pipeline=None, seed: int = 0) -> dict:
    """A test step of synthetic images (gradients and noise) through
    ``pipeline`` (default: loaded and packed as they are)."""
    from dinov2_seg.benchmark.inputs import test_batch
    if pipeline is not None:
        return test_batch(pipeline, sizes[0], len(sizes))
    inputs, samples = [], []
    for index, (height, width) in enumerate(sizes):
        image = synthetic_image(height, width, seed=seed + index)
        inputs.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        samples.append(
            SegDataSample(
                metainfo=dict(
                    ori_shape=(height, width), img_shape=(height, width))))
    return dict(inputs=inputs, data_samples=samples)


def training_data(count: int, size: tuple, classes: int) -> dict:
    generator = torch.Generator().manual_seed(1)
    data = step_data([size] * count, seed=5)
    for sample in data['data_samples']:
        labels = torch.randint(0, classes, (1, *size), generator=generator)
        labels[..., :4] = 255  # ignored pixels too
        sample.gt_sem_seg = PixelData(data=labels)
        sample.set_metainfo(dict(pad_shape=size))
    return data


def on_device(model: torch.nn.Module, device: str) -> torch.nn.Module:
    copied = copy.deepcopy(model).to(device)
    copied.cfg = model.cfg
    return copied
