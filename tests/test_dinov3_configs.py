"""The DINOv3 configs follow Meta's DINOv3 linear recipe and build."""
import json
import math

import pytest
import torch
from helpers.tools import REPO
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmseg.registry import MODELS

from dinov2_seg.models.segmentors import BatchedEncoderDecoder

# Meta's recipe, written from dinov3/eval/segmentation/configs/
# config-ade20k-linear-training.yaml (and config.py's DecoderConfig default
# dropout, which the yaml keeps); each value is checked in the configs.
META = dict(
    bs=2,
    n_gpus=8,
    total_iter=40000,
    warmup_iters=1500,
    warmup_ratio=1e-6,
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    weight_decay=1e-3,
    img_size=512,
    random_img_size_ratio_range=(0.5, 2.0),
    crop_size=(512, 512),
    flip_prob=0.5,
    dropout=0.1,
    eval_crop_size=512,
    eval_stride=341,
    eval_interval=5000,
)
# config-ade20k-m2f-inference.yaml's tta_ratios (Meta's DINOv3 TTA).
META_TTA_RATIOS = [0.9, 0.95, 1.0, 1.05, 1.1]
# dinov3/hub/backbones.py: embedding widths; file hashes of the LVD-1689M
# weights; ConvNeXt: dims[-1] of convnext_sizes.
EMBED = {
    'vits16': 384,
    'vits16plus': 384,
    'vitb16': 768,
    'vitl16': 1024,
    'vitl16plus': 1024,
    'vith16plus': 1280,
    'vit7b16': 4096,
    'convnext_tiny': 768,
    'convnext_small': 768,
    'convnext_base': 1024,
    'convnext_large': 1536,
}
HASHES = {
    'vits16': '08c60483',
    'vits16plus': '4057cbaa',
    'vitb16': '73cec8be',
    'vitl16': '8aa4cbdd',
    'vitl16plus': '46503df0',
    'vith16plus': '7c1da9a5',
    'vit7b16': 'a955f4ea',
    'convnext_tiny': '21b726bb',
    'convnext_small': '296db49d',
    'convnext_base': '801f2ba9',
    'convnext_large': '61fa432d',
}
VITS = [a for a in EMBED if a.startswith('vit')]
CONVNEXTS = [a for a in EMBED if a.startswith('convnext')]
CLASSES = {'ade20k': 150, 'voc2012': 21}
NAMES = ([f'{ds}_{a}_linear' for ds in CLASSES
          for a in VITS] + [f'ade20k_{a}_linear' for a in CONVNEXTS])


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / 'dinov3' / f'{name}.py'))


def step(pipeline: list, kind: str) -> dict:
    found = [t for t in pipeline if t.type == kind]
    assert len(found) == 1, (kind, pipeline)
    return found[0]


def test_every_config_exists():
    found = {p.stem for p in (REPO / 'configs' / 'dinov3').glob('*.py')}
    assert set(NAMES) <= found


def assert_pil_resize(transform, short_side):
    # Meta resizes PIL images with torchvision: the short side fixed, the
    # long side free, PIL's antialiased bilinear filter.
    assert tuple(transform.scale) == (1_000_000, short_side)
    assert transform.keep_ratio
    assert (transform.backend, transform.interpolation) == ('pillow',
                                                            'bilinear')


@pytest.mark.parametrize('name', NAMES)
def test_config_follows_meta_recipe(name):
    ds, arch = name.split('_')[0], name[name.index('_') + 1:-len('_linear')]
    cfg = load(name)
    model = cfg.model
    assert issubclass(MODELS.get(model.type), BatchedEncoderDecoder)
    backbone = model.backbone
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f'checkpoints/dinov3_{arch}_pretrain_lvd1689m-'
        f'{HASHES[arch]}.pth')
    if arch.startswith('vit'):
        assert (backbone.type, backbone.arch) == ('DinoV3VisionTransformer',
                                                  arch)
        # "backbone_out_layers: LAST"
        assert list(backbone.out_indices) == [-1]
    else:
        assert (backbone.type, backbone.arch) == ('DinoV3ConvNeXt',
                                                  arch.split('_')[1])
        assert list(backbone.out_indices) == [3]  # Meta's n_blocks - 1
    head = model.decode_head
    # "use_batchnorm: True", linear, no class token, dropout 0.1
    assert head.type == 'DinoBNHead' and head.num_classes == CLASSES[ds]
    assert head.in_channels == [EMBED[arch]] and head.in_index == [0]
    assert head.dropout_ratio == META['dropout']
    assert head.norm_cfg.type == 'SyncBN'
    assert head.loss_decode.type == 'CrossEntropyLoss'
    assert head.loss_decode.get('avg_non_ignore', False) is False
    # "mode: slide, crop_size: 512, stride: 341"
    assert model.test_cfg.mode == 'slide'
    assert model.test_cfg.crop_size == (META['eval_crop_size'], ) * 2
    assert model.test_cfg.stride == (META['eval_stride'], ) * 2
    # Padding to the crop (labels 255), ImageNet mean/std x 255.
    assert model.data_preprocessor.size == META['crop_size']
    assert model.data_preprocessor.seg_pad_val == 255
    assert model.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert model.data_preprocessor.std == [58.395, 57.12, 57.375]

    train = cfg.train_dataloader
    # "bs: 2, n_gpus: 8"
    assert train.batch_size == META['bs']
    assert cfg.auto_scale_lr.base_batch_size == META['bs'] * META['n_gpus']
    pipeline = train.dataset.pipeline
    resize = step(pipeline, 'RandomResize')
    assert_pil_resize(resize, META['img_size'])
    assert tuple(resize.ratio_range) == META['random_img_size_ratio_range']
    crop = step(pipeline, 'RandomCrop')
    assert crop.crop_size == META['crop_size'] and crop.cat_max_ratio == 0.75
    assert step(pipeline, 'RandomFlip').prob == META['flip_prob']
    # torchvision's hue_range (-0.5, 0.5) of the circle = OpenCV's +-90.
    assert step(pipeline, 'PhotoMetricDistortion').hue_delta == 90
    kinds = [t.type for t in pipeline]
    assert kinds.index('RandomResize') < kinds.index('RandomCrop') < \
        kinds.index('RandomFlip') < kinds.index('PhotoMetricDistortion')
    assert train.dataset.type == {
        'ade20k': 'ADE20KDataset',
        'voc2012': 'PascalVOCDataset'
    }[ds]
    # "eval: img_size: 512", single scale
    test_pipeline = cfg.test_dataloader.dataset.pipeline
    assert_pil_resize(step(test_pipeline, 'Resize'), META['img_size'])
    assert [t.type for t in test_pipeline
            ].index('Resize') < [t.type for t in test_pipeline
                                 ].index('DinoLoadAnnotations')
    # --tta: Meta's short sides, int(512 r), rounded up to 32 below r 1.
    resizes, flips = cfg.tta_pipeline[1].transforms[:2]
    sides = [
        math.ceil(int(512 * r) / 32) * 32 if r < 1 else int(512 * r)
        for r in META_TTA_RATIOS
    ]
    assert sides == [480, 512, 512, 537, 563]
    for transform, side in zip(resizes, sides, strict=True):
        assert_pil_resize(transform, side)
    assert [(t.prob, t.direction) for t in flips] == [(0.0, 'horizontal'),
                                                      (1.0, 'horizontal')]
    assert cfg.tta_model.type == 'BatchedSegTTAModel'

    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay,
            tuple(optimizer.betas)) == ('AdamW', META['lr'],
                                        META['weight_decay'], (META['beta1'],
                                                               META['beta2']))
    assert 'clip_grad' not in cfg.optim_wrapper  # "gradient_clip: inf"
    assert cfg.train_cfg.max_iters == META['total_iter']
    assert cfg.train_cfg.val_interval == META['eval_interval']
    (schedule, ) = cfg.param_scheduler
    assert schedule.type == 'DinoV3WarmupCosineLR'
    assert (schedule.warmup_iters, schedule.warmup_ratio, schedule.begin,
            schedule.end) == (META['warmup_iters'], META['warmup_ratio'], 0,
                              META['total_iter'])


def meta_lrs(total: int) -> list:
    """The lr of each iteration in Meta's training, written from its
    schedulers.py and train.py: ``WarmupOneCycleLR`` with the recipe's
    kwargs (the warm-up branch: ``max_lr * (1 - k) * (1 - s / total)``
    with ``k = (1 - s / warmup) * (1 - ratio)``; afterwards the cosine
    annealing from ``max_lr`` to ``max_lr / 25 / inf = 0`` at ``(s + 1) /
    total``), its step counter s advanced after every iteration but the
    first (``if global_step > 0: scheduler.step()``)."""
    max_lr, warmup, ratio = META['lr'], META['warmup_iters'], META[
        'warmup_ratio']
    min_lr = max_lr / 25.0 / float('inf')

    def lr_at(s):
        if s < warmup:
            k = (1 - s / warmup) * (1 - ratio)
            return max_lr * (1 - k) * (1 - s / total)
        cos_out = math.cos(math.pi * (s + 1) / total) + 1
        return min_lr + (max_lr - min_lr) / 2.0 * cos_out

    lrs, s = [], 0
    for iteration in range(total):
        lrs.append(lr_at(s))
        if iteration > 0:
            s += 1
    return lrs


def test_schedule_is_metas_warmup_one_cycle():
    cfg = load('ade20k_vits16_linear')
    wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), cfg.optim_wrapper)
    scheduler = PARAM_SCHEDULERS.build(
        dict(cfg.param_scheduler[0], optimizer=wrapper))
    ours = []
    for _ in range(META['total_iter']):
        ours.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.step()
        scheduler.step()
    expected = meta_lrs(META['total_iter'])
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # The shape: 1e-9 for two iterations, the jump after the warm-up, 0 at
    # the end.
    assert ours[:2] == pytest.approx([1e-9, 1e-9])
    assert ours[1500] == pytest.approx(0.96188e-3, rel=1e-4)
    assert ours[1501] == pytest.approx(0.99653e-3, rel=1e-4)
    assert ours[-1] < 1e-11


@pytest.mark.parametrize('name', NAMES)
def test_config_builds(name):
    cfg = load(name)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    arch = name[name.index('_') + 1:-len('_linear')]
    assert model.decode_head.channels == EMBED[arch]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.decode_head.dropout.p == META['dropout']


@pytest.mark.parametrize(
    'name,arch',
    [('ade20k_convnext_tiny_linear',
      dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])),
     ('ade20k_vits16_linear', dict(embed_dim=32, depth=2, num_heads=2))])
def test_training_step_and_slide_prediction(name, arch):
    """A training step and a slide prediction on a reduced backbone: the
    head learns, the backbone stays."""
    from test_configs import tiny_batch
    cfg = load(name)
    cfg.model.backbone.arch = arch
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.in_channels = [32]
    cfg.model.data_preprocessor.size = (64, 96)
    cfg.model.test_cfg.update(crop_size=(64, 64), stride=(48, 48))
    model = MODELS.build(cfg.model)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.decode_head.conv_seg.weight.clone()
    model.train()
    losses = model.train_step(tiny_batch(150, (64, 96)), optim_wrapper)
    assert torch.isfinite(losses['decode.loss_ce'])
    assert not torch.equal(model.decode_head.conv_seg.weight, head_before)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    (result, ) = model.val_step(tiny_batch(150, (70, 100)))[:1]
    assert result.seg_logits.data.shape == (150, 70, 100)


@pytest.mark.parametrize('name,arch,modes', [
    ('ade20k_vits16_linear', dict(embed_dim=32, depth=2, num_heads=2),
     ('backbone', 'slide', 'tta')),
    ('ade20k_convnext_tiny_linear',
     dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32]),
     ('backbone', 'slide', 'tta')),
])
def test_benchmark_modes_run(tmp_path, capsys, name, arch, modes):
    """tools/benchmark.py's modes on a DINOv3 config (reduced backbone and
    5 classes: the same code paths, less time), ViT and ConvNeXt."""
    from dinov2_seg.cli.benchmark import main
    config = tmp_path / f'{name}.py'
    config.write_text(
        f"_base_ = [{str(REPO / 'configs' / 'dinov3' / f'{name}.py')!r}]\n"
        f'model = dict(backbone=dict(arch=dict(_delete_=True, **{arch!r})),'
        ' decode_head=dict(in_channels=[32], num_classes=5))\n')
    out = tmp_path / 'results.jsonl'
    extra = dict(
        backbone=['--size', '64', '96'],
        slide=['--size', '40', '56'],
        tta=['--size', '40', '56', '--scales', '1'])
    records = {}
    for mode in modes:
        assert main([
            str(config), '--mode', mode, '--device', 'cpu', '--repeat', '1',
            '--warmup', '0', '--out',
            str(out), *extra[mode]
        ]) == 0
        records[mode] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert records['backbone']['seconds'] > 0
    # FLOPs are counted for ViTs only.
    assert ('tflops' in records['backbone']) == ('vit' in name)
    if 'slide' in records:
        # Short side 512: 512 x 716, two 512 windows at stride 341; the
        # first TTA scale (short side 480: 480 x 672) twice (both flips),
        # two windows each.
        assert records['slide']['windows'] == 2
        assert records['tta']['windows'] == 4
    assert len(out.read_text().splitlines()) == len(modes)


def test_pipelines_resize_as_torchvision_on_pil(shapes_root):
    """The test resize gives PIL's bilinear resize of the image (what Meta's
    torchvision Resize does to a PIL image) at short side 512; the train
    and TTA pipelines run."""
    import numpy as np
    from mmcv.transforms import Compose
    from PIL import Image

    cfg = load('ade20k_vits16_linear')
    image = sorted((shapes_root / 'images' / 'validation').glob('*.jpg'))[0]
    label = shapes_root / 'annotations' / 'validation' / f'{image.stem}.png'

    def sample():
        return dict(
            img_path=str(image),
            seg_map_path=str(label),
            reduce_zero_label=True,
            seg_fields=[])

    packed = Compose(cfg.test_pipeline)(sample())
    rgb = Image.open(image).convert('RGB')
    width, height = rgb.size  # 125 x 90: short side 512, long int(x + .5)
    size = (int(512 * width / height + 0.5), 512)
    expected = np.asarray(rgb.resize(size, Image.BILINEAR))[..., ::-1]
    ours = packed['inputs'].permute(1, 2, 0).numpy()
    assert ours.shape == (512, size[0], 3)
    assert np.array_equal(ours, expected)
    # At most a 512 crop (the preprocessor pads), its labels alike.
    train = Compose(cfg.train_pipeline)(sample())
    assert max(train['inputs'].shape[1:]) <= 512
    assert train['data_samples'].gt_sem_seg.data.shape[1:] == train[
        'inputs'].shape[1:]
    views = Compose(cfg.tta_pipeline)(sample())
    assert [v.shape[1] for v in views['inputs']
            ] == [480] * 2 + [512] * 4 + [537] * 2 + [563] * 2
