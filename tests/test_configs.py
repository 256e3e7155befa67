import itertools

import pytest
import torch
from helpers.tools import REPO
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinov2_seg.models.segmentors import BatchedEncoderDecoder

# The official recipes, written from Meta's mmseg 0.x configs as recorded in
# /work/shared/FACTS.md ('Official DINOv2 backbones' for the sizes,
# 'Official head recipes' for the rest). Each value below is checked
# against the configs; the comments name the recipe line it comes from.
EMBED = {'vits14': 384, 'vitb14': 768, 'vitl14': 1024, 'vitg14': 1536}
DEPTH = {'vits14': 12, 'vitb14': 12, 'vitl14': 24, 'vitg14': 40}
CLASSES = {'ade20k': 150, 'voc2012': 21}
RECIPES = {
    'linear':
    dict(
        # "DinoBNHead in_channels=[embed], in_index=[3], channels=embed"
        levels=1,
        in_index=[3],
        # "Resize img_scale=(2048, 512) ratio_range=(0.5, 2.0), RandomCrop
        # 512 cat_max_ratio 0.75"
        train_scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        crop=512,
        cat_max_ratio=0.75,
        # "Test: Resize (2048, 512) keep ratio, slide crop 512 stride 341,
        # no TTA"
        test_scale=(2048, 512),
        stride=341),
    'ms':
    dict(
        # "DinoBNHead in_channels=[embed]*4, in_index=[0, 1, 2, 3],
        # channels=4*embed"
        levels=4,
        in_index=[0, 1, 2, 3],
        # "Resize img_scale=(99999999, 640) ratio_range=(1.0, 3.0),
        # RandomCrop 640"
        train_scale=(99999999, 640),
        ratio_range=(1.0, 3.0),
        crop=640,
        cat_max_ratio=None,
        # "MultiScaleFlipAug img_scale=(99999999, 640), img_ratios=[1.0,
        # 1.32, 1.73, 2.28, 3.0], flip; slide crop 640 stride 320"
        test_scale=(99999999, 640),
        img_ratios=[1.0, 1.32, 1.73, 2.28, 3.0],
        stride=320),
}
TOP_LEVEL = [
    f'{ds}_{arch}_{recipe}'
    for ds, arch, recipe in itertools.product(CLASSES, EMBED, RECIPES)
]


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def step(pipeline: list, kind: str) -> dict:
    found = [t for t in pipeline if t.type == kind]
    assert len(found) == 1, (kind, pipeline)
    return found[0]


def test_every_combination_exists():
    found = {p.stem for p in (REPO / 'configs').glob('*.py')}
    assert set(TOP_LEVEL) <= found


@pytest.mark.parametrize('name', TOP_LEVEL)
def test_config_follows_official_recipe(name):
    ds, arch, recipe_name = name.split('_')
    recipe = RECIPES[recipe_name]
    cfg = load(name)
    model = cfg.model
    assert model.backbone.arch == arch
    # Meta's release names its backbone files <name>_pretrain.pth.
    assert model.backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f'checkpoints/dinov2_{arch}_pretrain.pth')
    head = model.decode_head
    assert head.type == 'DinoBNHead' and head.num_classes == CLASSES[ds]
    # "dropout 0, SyncBN, cross-entropy"
    assert head.dropout_ratio == 0
    assert head.norm_cfg.type == 'SyncBN'
    assert head.loss_decode.type == 'CrossEntropyLoss'
    assert head.in_index == recipe['in_index']
    assert head.in_channels == [EMBED[arch]] * recipe['levels']
    assert head.get('input_transform', 'resize_concat') == 'resize_concat'
    crop = recipe['crop']
    assert model.test_cfg.mode == 'slide'
    assert model.test_cfg.crop_size == (crop, crop)
    assert model.test_cfg.stride == (recipe['stride'], ) * 2
    # "Pad 512 (seg pad 255)" / "Pad 640": the data preprocessor pads.
    assert model.data_preprocessor.size == (crop, crop)
    assert model.data_preprocessor.seg_pad_val == 255
    test_resize = step(cfg.test_pipeline, 'Resize')
    assert (test_resize.scale,
            test_resize.keep_ratio) == (recipe['test_scale'], True)
    if recipe_name == 'ms':
        resizes, flips = cfg.tta_pipeline[1].transforms[:2]
        long, short = recipe['test_scale']
        assert [tuple(t.scale) for t in resizes] == [
            (int(long * r), int(short * r)) for r in recipe['img_ratios']
        ]
        assert all(t.keep_ratio for t in resizes)
        assert [(t.prob, t.direction) for t in flips] == [(0.0, 'horizontal'),
                                                          (1.0, 'horizontal')]

    # "2 images per GPU x 8 GPUs"
    train = cfg.train_dataloader
    assert train.batch_size == 2
    datasets = train.dataset.get('datasets', [train.dataset])
    if ds == 'voc2012' and recipe_name == 'ms':
        # "VOC ms trains on train + SBD aug (SegmentationClassAug,
        # ImageSets/Segmentation/aug.txt)"
        assert [d.data_prefix.seg_map_path for d in datasets
                ] == ['SegmentationClass', 'SegmentationClassAug']
        assert datasets[1].ann_file.endswith('ImageSets/Segmentation/aug.txt')
    for dataset in datasets:
        pipeline = dataset.pipeline
        resize = step(pipeline, 'RandomResize')
        assert (tuple(resize.scale), tuple(resize.ratio_range),
                resize.keep_ratio) == (recipe['train_scale'],
                                       recipe['ratio_range'], True)
        crop_step = step(pipeline, 'RandomCrop')
        assert crop_step.crop_size == (crop, crop)
        assert crop_step.get('cat_max_ratio') == recipe['cat_max_ratio']
        # "flip 0.5, PhotoMetricDistortion"
        assert step(pipeline, 'RandomFlip').prob == 0.5
        step(pipeline, 'PhotoMetricDistortion')
        # Resize, crop and flip in the recipe's order.
        kinds = [t.type for t in pipeline]
        assert kinds.index('RandomResize') < kinds.index(
            'RandomCrop') < kinds.index('RandomFlip')
    assert cfg.test_dataloader.dataset.type == datasets[0].type
    # "AdamW lr 1e-3, weight decay 1e-4, betas (0.9, 0.999)"
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay,
            tuple(optimizer.betas)) == ('AdamW', 1e-3, 1e-4, (0.9, 0.999))
    # "poly lr power 1.0 to 0; linear warmup 1500 iters from ratio 1e-6;
    # 40k iters"
    assert cfg.train_cfg.max_iters == 40000
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ('LinearLR', 1500,
                                                              1e-6)
    assert (poly.type, poly.end, poly.power,
            poly.get('eta_min', 0)) == ('PolyLR', 40000, 1.0, 0)


@pytest.mark.parametrize('name', TOP_LEVEL)
def test_config_builds(name):
    cfg = load(name)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    arch = name.split('_')[1]
    assert model.num_classes == CLASSES[name.split('_')[0]]
    assert model.backbone.embed_dim == EMBED[arch]
    assert len(model.backbone.blocks) == DEPTH[arch]
    # "channels=embed" (linear) / "channels=4*embed" (ms)
    levels = RECIPES[name.split('_')[2]]['levels']
    assert model.decode_head.channels == EMBED[arch] * levels
    # "out_indices = the last 4 blocks ([8, 9, 10, 11] for 12 blocks)"
    assert tuple(model.backbone.out_indices) == tuple(
        range(DEPTH[arch] - 4, DEPTH[arch]))
    # "backbone frozen"
    assert not any(p.requires_grad for p in model.backbone.parameters())


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
    from dinov2_seg.engine.run_config import enable_amp
    cfg = load('ade20k_vits14_linear')
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


@pytest.mark.parametrize('count', [None, 3, 1])
def test_tta_scale_count_selects_the_first_scales(count):
    from dinov2_seg.datasets.pipelines import select_tta_scales

    # The recipe's short sides: int(640 * ratio) for the first scales.
    heights = [int(640 * r) for r in RECIPES['ms']['img_ratios'][:count]]
    cfg = load('ade20k_vits14_ms')
    if count is not None:  # as --cfg-options tta_scale_count=N does
        cfg.merge_from_dict({'tta_scale_count': count})
    resizes = select_tta_scales(cfg, 'cfg')[1].transforms[0]
    assert [t.scale[1] for t in resizes] == heights
    assert len(cfg.tta_pipeline[1].transforms[0]) == 5  # config untouched


@pytest.mark.parametrize(
    'path', sorted((REPO / 'configs').glob('*.py')), ids=lambda p: p.stem)
def test_every_config_takes_the_fast_paths(path):
    """docs/speed.md: every config's segmentor batches its slide windows and
    its --tta model is the batched multi-scale flip test."""
    cfg = Config.fromfile(str(path))
    assert issubclass(MODELS.get(cfg.model.type), BatchedEncoderDecoder)
    assert cfg.model.test_cfg.mode == 'slide'
    assert cfg.model.test_cfg.get('fast_inference', True)
    assert cfg.tta_model.type == 'BatchedSegTTAModel'
