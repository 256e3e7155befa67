import itertools

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from helpers.tools import REPO
from dinov2_seg.models.segmentors import BatchedEncoderDecoder

EMBED = {'vits14': 384, 'vitb14': 768, 'vitl14': 1024, 'vitg14': 1536}
CLASSES = {'ade20k': 150, 'voc2012': 21}
TOP_LEVEL = [
    f'{ds}_{arch}_{recipe}'
    for ds, arch, recipe in itertools.product(CLASSES, EMBED, ('linear', 'ms'))
]


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def test_every_combination_exists():
    found = {p.stem for p in (REPO / 'configs').glob('*.py')}
    assert set(TOP_LEVEL) <= found


@pytest.mark.parametrize('name', TOP_LEVEL)
def test_config_follows_official_recipe(name):
    ds, arch, recipe = name.split('_')
    cfg = load(name)
    model = cfg.model
    assert model.backbone.type == 'DinoVisionTransformer'
    assert model.backbone.arch == arch
    assert model.backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f'checkpoints/dinov2_{arch}_pretrain.pth')
    head = model.decode_head
    assert head.type == 'BNHead' and head.num_classes == CLASSES[ds]
    assert head.dropout_ratio == 0
    crop = 512 if recipe == 'linear' else 640
    if recipe == 'linear':
        assert head.in_index == [3] and head.in_channels == [EMBED[arch]]
        assert model.test_cfg.stride == (341, 341)
    else:
        assert head.in_index == [0, 1, 2, 3]
        assert head.in_channels == [EMBED[arch]] * 4
        assert model.test_cfg.stride == (320, 320)
        ratios = [t.scale[1] for t in cfg.tta_pipeline[1].transforms[0]]
        assert ratios == [640, 844, 1107, 1459, 1920]
        flips = [t.prob for t in cfg.tta_pipeline[1].transforms[1]]
        assert flips == [0.0, 1.0]
    assert model.test_cfg.mode == 'slide'
    assert model.test_cfg.crop_size == (crop, crop)
    assert model.data_preprocessor.size == (crop, crop)
    assert model.data_preprocessor.seg_pad_val == 255

    train = cfg.train_dataloader
    assert train.batch_size == 2
    datasets = train.dataset.get('datasets', [train.dataset])
    if ds == 'voc2012' and recipe == 'ms':  # VOC train + SBD aug
        assert [d.data_prefix.seg_map_path for d in datasets
                ] == ['SegmentationClass', 'SegmentationClassAug']
    for dataset in datasets:
        crop_step = [t for t in dataset.pipeline if t.type == 'RandomCrop']
        assert crop_step[0].crop_size == (crop, crop)
    assert cfg.test_dataloader.dataset.type == datasets[0].type
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr,
            optimizer.weight_decay) == ('AdamW', 1e-3, 1e-4)
    assert cfg.train_cfg.max_iters == 40000
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, warmup.start_factor, poly.end,
            poly.power) == (1500, 1e-6, 40000, 1.0)


@pytest.mark.parametrize('name', TOP_LEVEL)
def test_config_builds(name):
    cfg = load(name)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.num_classes == cfg.model.decode_head.num_classes
    assert model.backbone.embed_dim == EMBED[name.split('_')[1]]


def tiny_batch(num_classes, size=(56, 70)):
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(
            torch.randint(
                0, 256, (3, *size), generator=generator, dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, *size), generator=generator)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(
            dict(img_shape=size, ori_shape=size, pad_shape=size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('arch,recipe',
                         [('vits14', 'ms'), ('vitb14', 'linear'),
                          ('vitl14', 'linear'), ('vitg14', 'ms')])
def test_forward_and_training_step(arch, recipe):
    cfg = load(f'ade20k_{arch}_{recipe}')
    cfg.model.backbone.init_cfg = None
    if arch == 'vitg14':  # full width and SwiGLU, fewer blocks
        from dinov2_seg.models.backbones import ARCH_SETTINGS
        cfg.model.backbone.arch = dict(ARCH_SETTINGS['vitg14'], depth=4)
    cfg.model.data_preprocessor.size = (56, 70)
    cfg.model.test_cfg = dict(mode='whole')
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    backbone_before = {
        k: v.clone()
        for k, v in model.backbone.state_dict().items()
    }
    head_before = model.decode_head.conv_seg.weight.clone()

    model.train()
    losses = model.train_step(tiny_batch(150), optim_wrapper)
    assert torch.isfinite(losses['decode.loss_ce'])
    assert not torch.equal(model.decode_head.conv_seg.weight, head_before)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key
    optimizer = optim_wrapper.optimizer
    backbone_params = {id(p) for p in model.backbone.parameters()}
    assert optimizer.state, 'the head was not optimised'
    assert not any(id(p) in backbone_params for p in optimizer.state)

    model.eval()
    results = model.val_step(tiny_batch(150))
    assert results[0].pred_sem_seg.data.shape == (1, 56, 70)
    assert results[0].seg_logits.data.shape == (150, 56, 70)


def test_image_smaller_than_a_patch_through_slide_inference():
    """A 9x11 image (smaller than the 512 window and than one 14-pixel
    patch) is center-padded inside the backbone and predicted at full
    resolution."""
    cfg = load('ade20k_vits14_linear')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    batch = tiny_batch(150, size=(9, 11))
    results = model.val_step(batch)
    assert results[0].pred_sem_seg.data.shape == (1, 9, 11)


def test_amp_flag_switches_the_optim_wrapper():
    from dinov2_seg.apis.train import enable_amp
    cfg = load('ade20k_vits14_linear')
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


@pytest.mark.parametrize('count,heights',
                         [(None, [640, 844, 1107, 1459, 1920]),
                          (3, [640, 844, 1107]), (1, [640])])
def test_tta_scale_count_selects_the_first_scales(count, heights):
    from dinov2_seg.apis.runner_setup import select_tta_scales
    cfg = load('ade20k_vits14_ms')
    if count is not None:  # as --cfg-options tta_scale_count=N does
        cfg.merge_from_dict({'tta_scale_count': count})
    resizes = select_tta_scales(cfg, 'cfg')[1].transforms[0]
    assert [t.scale[1] for t in resizes] == heights
    assert len(cfg.tta_pipeline[1].transforms[0]) == 5  # config untouched


@pytest.mark.parametrize(
    'path', sorted((REPO / 'configs').glob('*.py')), ids=lambda p: p.stem)
def test_every_config_takes_the_fast_paths(path):
    """The README: every config's segmentor batches its slide windows and
    its --tta model is the batched multi-scale flip test."""
    cfg = Config.fromfile(str(path))
    assert issubclass(MODELS.get(cfg.model.type), BatchedEncoderDecoder)
    assert cfg.model.test_cfg.mode == 'slide'
    assert cfg.model.test_cfg.get('fast_inference', True)
    assert cfg.tta_model.type == 'BatchedSegTTAModel'
