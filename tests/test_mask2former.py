"""Mask2Former on DINOv2: the feature-pyramid neck, training and slide
inference of the whole segmentor, the tools, and the configs of every
backbone size."""
import itertools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.archs import TINY_ARCH
from helpers.tools import (REPO, assert_every_scale_and_flip, check,
                           predictions_miou, reported_miou, run,
                           run_test_tool_recording_views, shapes_labels)
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmseg.datasets import BaseSegDataset
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from dinov2_seg.datasets.synthetic import SHAPES_CLASSES, SHAPES_PALETTE

EMBED = {'vits14': 384, 'vitb14': 768, 'vitl14': 1024, 'vitg14': 1536}
DEPTH = {'vits14': 12, 'vitb14': 12, 'vitl14': 24, 'vitg14': 40}
# Four evenly spaced blocks, the last one included: the end of each quarter.
BLOCKS = {
    arch: [(i + 1) * depth // 4 - 1 for i in range(4)]
    for arch, depth in DEPTH.items()
}
CLASSES = {'ade20k': 150, 'voc2012': 21}
M2F_CONFIGS = [
    f'{ds}_{arch}_m2f' for ds, arch in itertools.product(CLASSES, EMBED)
]
NUM_SHAPES = len(SHAPES_CLASSES)
TINY_NORM = dict(type='GN', num_groups=8)  # the tiny widths are 24 and 32


def tiny_model(num_classes: int = NUM_SHAPES, width: int = 32) -> dict:
    """Overrides that shrink an m2f config's model to the tiny backbone and
    a narrow, shallow head (same modules, a fraction of the cost)."""
    attention = dict(embed_dims=width, num_heads=4)
    ffn = dict(embed_dims=width, feedforward_channels=2 * width)
    return dict(
        backbone=dict(
            arch=dict(TINY_ARCH, _delete_=True),
            out_indices=[0, 1, 2, 3],
            init_cfg=None),
        neck=dict(
            in_channels=TINY_ARCH['embed_dim'],
            out_channels=width,
            norm_cfg=TINY_NORM),
        decode_head=dict(
            in_channels=[width] * 4,
            feat_channels=width,
            out_channels=width,
            num_classes=num_classes,
            num_queries=10,
            pixel_decoder=dict(
                norm_cfg=TINY_NORM,
                encoder=dict(
                    num_layers=1,
                    layer_cfg=dict(self_attn_cfg=attention, ffn_cfg=ffn)),
                positional_encoding=dict(num_feats=width // 2)),
            positional_encoding=dict(num_feats=width // 2),
            transformer_decoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=attention,
                    cross_attn_cfg=attention,
                    ffn_cfg=ffn)),
            loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
            train_cfg=dict(num_points=256)))


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def build_backbone_and_neck():
    backbone = MODELS.build(dict(type='DinoVisionTransformer', arch=TINY_ARCH))
    neck = MODELS.build(
        dict(
            type='DinoFeaturePyramid',
            in_channels=TINY_ARCH['embed_dim'],
            out_channels=32,
            norm_cfg=TINY_NORM))
    return backbone, neck


# Input size -> level sizes. 230x175 is center-padded to 238x182 (17x13
# patches), i.e. 14x11 cells of 16 pixels; the stride-32 level keeps the odd
# cell (ceil). The training and slide crops give exact quarters to 32nds.
PYRAMIDS = {
    (230, 175): [(56, 44), (28, 22), (14, 11), (7, 6)],
    (512, 512): [(128, 128), (64, 64), (32, 32), (16, 16)],
    (640, 640): [(160, 160), (80, 80), (40, 40), (20, 20)],
}


@pytest.mark.parametrize('size,expected', PYRAMIDS.items())
def test_neck_gives_strides_4_8_16_32(size, expected):
    backbone, neck = build_backbone_and_neck()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, *size))
        levels = neck(feats)
    assert [f.shape[-2:] for f in feats] == [feats[0].shape[-2:]] * 4
    assert [tuple(x.shape[-2:]) for x in levels] == expected
    assert all(x.shape[:2] == (2, 32) for x in levels)


def test_neck_rejects_other_inputs():
    backbone, neck = build_backbone_and_neck()
    feats = backbone(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match='sequence of 4 backbone maps.*got 3'):
        neck(feats[:3])
    with pytest.raises(
            ValueError,
            match=re.escape('in_channels=48 channels (the backbone '
                            'embed_dim), got shapes [(1, 24, 2, 2)')):
        neck([f[:, :24] for f in feats])


def shapes_batch(root, split: str, count: int) -> dict:
    """``count`` images and labels of the shapes data, loaded by mmseg's
    pipeline as a dataloader would."""
    dataset = BaseSegDataset(
        data_root=str(root),
        data_prefix=dict(
            img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        metainfo=dict(classes=SHAPES_CLASSES, palette=SHAPES_PALETTE),
        reduce_zero_label=True,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='DinoLoadAnnotations'),
            dict(type='PackSegInputs')
        ])
    return pseudo_collate([dataset[i] for i in range(count)])


def build_tiny(cfg: Config):
    cfg.merge_from_dict(
        dict(
            model=dict(
                tiny_model(),
                # 90x125 images; both sides multiples of 16 for the pyramid.
                data_preprocessor=dict(size=(96, 128)),
                test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.mark.slow
def test_training_learns_with_a_frozen_backbone(shapes_root):
    cfg = load('ade20k_vits14_m2f')
    model = build_tiny(cfg)
    # The recipe's optimiser (AdamW, clipping, no decay on queries and
    # norms) with a larger step: a random head is to improve in 6 steps.
    cfg.optim_wrapper.optimizer.lr = 1e-3
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = shapes_batch(shapes_root, 'training', 2)

    model.train()
    assert not model.backbone.training
    totals = []
    for _ in range(6):
        losses = model.train_step(batch, optim_wrapper)
        totals.append(sum(v.item() for k, v in losses.items() if 'loss' in k))
    assert all(map(torch.isfinite, losses.values()))
    assert totals[-1] < 0.9 * totals[0], totals

    after = model.state_dict()
    for key, value in before.items():
        if key.startswith('backbone.'):
            assert torch.equal(after[key], value), key
    for part in ('neck.', 'decode_head.'):
        changed = [
            k for k, v in before.items()
            if k.startswith(part) and not torch.equal(after[k], v)
        ]
        assert len(changed) > 10, part
    backbone_params = {id(p) for p in model.backbone.parameters()}
    assert optim_wrapper.optimizer.state
    assert not any(
        id(p) in backbone_params for p in optim_wrapper.optimizer.state)


def test_slide_prediction_covers_the_original_image(shapes_root):
    model = build_tiny(load('voc2012_vits14_m2f')).eval()
    windows = []
    model.neck.register_forward_hook(lambda module, args, out: windows.extend(
        [out[0].shape[-2:]] * len(out[0])))
    batch = shapes_batch(shapes_root, 'validation', 1)
    assert batch['inputs'][0].shape[-2:] == (90, 125)
    with torch.no_grad():
        result = model.val_step(batch)[0]
    # 64-pixel windows at stride 48: 2 rows x 3 columns, each 16x16 at
    # stride 4.
    assert windows == [(16, 16)] * 6
    assert result.seg_logits.data.shape == (NUM_SHAPES, 90, 125)
    assert result.pred_sem_seg.data.shape == (1, 90, 125)
    assert torch.equal(result.pred_sem_seg.data[0],
                       result.seg_logits.data.argmax(0))


def write_tiny_config(path, data_root) -> str:
    """The real ADE20K ViT-S/14 m2f config (pipelines, crops, schedule, TTA)
    on the shapes data, with the tiny model and a 4-iteration run."""
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'ade20k_vits14_m2f.py')!r}]
shapes = dict(
    type='BaseSegDataset',
    data_root={str(data_root)!r},
    metainfo=dict(classes={SHAPES_CLASSES!r}, palette={SHAPES_PALETTE!r}),
    reduce_zero_label=True)
loader = dict(num_workers=0, persistent_workers=False, dataset=shapes)
train_dataloader = dict(loader, batch_size=2)
val_dataloader = loader
test_dataloader = val_dataloader
model = {tiny_model()!r}
param_scheduler = [dict(type='PolyLR', power=0.9, by_epoch=False, begin=0,
                        end=4)]
train_cfg = dict(max_iters=4, val_interval=100)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=4, max_keep_ckpts=1))
randomness = dict(seed=0)
""")
    return str(path)


@pytest.mark.slow
def test_train_then_test_tools(tmp_path, shapes_root):
    config = write_tiny_config(tmp_path / 'tiny_m2f.py', shapes_root)
    work = tmp_path / 'work'
    log = check(run('tools/train.py', config, '--work-dir', work, '--verbose'))
    assert 'Iter(train) [4/4]' in log
    assert 'decode.loss_dice' in log
    checkpoint = work / 'iter_4.pth'
    assert checkpoint.is_file()

    preds = tmp_path / 'preds'
    log = check(
        run('tools/test.py', config, checkpoint, '--work-dir', work, '--out',
            preds))
    for name in SHAPES_CLASSES:
        assert re.search(rf'\|\s+{name}\s+\|', log), name
    assert reported_miou(log) == pytest.approx(
        predictions_miou(preds, shapes_labels(shapes_root)), abs=0.01)
    # The recipe's multi-scale flip test, on its first two scales (ratios
    # 0.5 and 0.75 of (2048, 512): short sides 256 and 384), sliding 512
    # windows at stride 341: one window, then two.
    log, record = run_test_tool_recording_views(tmp_path, config, checkpoint,
                                                '--work-dir', work, '--tta',
                                                '--cfg-options',
                                                'tta_scale_count=2')
    assert re.search(r'mIoU: [\d.]+', log)
    assert_every_scale_and_flip(record, [(256, 356), (384, 533)], images=4)
    assert sum(record['backbone_images']) == 4 * 2 * (1 + 2)


def mmseg_stock_config(relative: str) -> Config:
    """One of the configs that mmsegmentation 1.2.2 installs with its
    package (``mmseg/.mim/configs``): the source of the recipe values."""
    import mmseg
    return Config.fromfile(
        str(Path(mmseg.__file__).parent / '.mim' / 'configs' / relative))


@pytest.fixture(scope='module')
def stock_m2f():
    """mmseg's own Mask2Former ADE20K 512 recipe, which the m2f configs
    follow for the head and the optimiser; the schedule is DINOv2's
    (FACTS.md 'Official head recipes': linear warm-up 1500 iterations,
    40k iterations, 2 images per GPU)."""
    return mmseg_stock_config(
        'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py')


@pytest.mark.parametrize('name', M2F_CONFIGS)
def test_config(name, stock_m2f):
    ds, arch, _ = name.split('_')
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.arch == arch
    assert backbone.out_indices == BLOCKS[arch]
    # Meta's release names its backbone files <name>_pretrain.pth.
    assert backbone.init_cfg.checkpoint == (
        f'checkpoints/dinov2_{arch}_pretrain.pth')
    assert cfg.model.neck.in_channels == EMBED[arch]
    head, stock_head = cfg.model.decode_head, stock_m2f.model.decode_head
    assert head.num_classes == CLASSES[ds]
    for key in ('num_queries', 'feat_channels', 'out_channels',
                'num_transformer_feat_level'):
        assert head[key] == stock_head[key], key
    assert (head.transformer_decoder.num_layers,
            head.pixel_decoder.encoder.num_layers) == (
                stock_head.transformer_decoder.num_layers,
                stock_head.pixel_decoder.encoder.num_layers)
    for loss in ('loss_cls', 'loss_mask', 'loss_dice'):
        assert head[loss].loss_weight == stock_head[loss].loss_weight, loss
    crop = stock_m2f.crop_size
    assert cfg.model.test_cfg.mode == 'slide'
    # The linear recipe's window (FACTS: slide crop 512 stride 341).
    assert (cfg.model.test_cfg.crop_size,
            cfg.model.test_cfg.stride) == (crop, (341, 341))
    assert cfg.model.data_preprocessor.size == crop

    train = cfg.train_dataloader
    assert train.batch_size == stock_m2f.train_dataloader.batch_size == 2
    assert train.dataset.data_prefix.seg_map_path in ('annotations/training',
                                                      'SegmentationClass')
    crop_step = [t for t in train.dataset.pipeline if t.type == 'RandomCrop']
    stock_crop = [
        t for t in stock_m2f.train_pipeline if t.type == 'RandomCrop'
    ]
    assert crop_step[0].crop_size == stock_crop[0].crop_size == crop
    # mmseg's ADE20K TTA ratios (0.5 to 1.75) applied, as mmseg 0.x's
    # MultiScaleFlipAug did, to the (2048, 512) test scale; both flips.
    ratios = mmseg_stock_config('_base_/datasets/ade20k.py').img_ratios
    scales = [tuple(t.scale) for t in cfg.tta_pipeline[1].transforms[0]]
    assert scales == [(int(2048 * r), int(512 * r)) for r in ratios]
    flips = [t.prob for t in cfg.tta_pipeline[1].transforms[1]]
    assert flips == [0.0, 1.0]
    optimizer, stock_optimizer = (cfg.optim_wrapper.optimizer,
                                  stock_m2f.optim_wrapper.optimizer)
    for key in ('type', 'lr', 'weight_decay', 'eps', 'betas'):
        assert optimizer.get(key) == stock_optimizer.get(key), key
    assert cfg.optim_wrapper.clip_grad == stock_m2f.optim_wrapper.clip_grad
    warmup, poly = cfg.param_scheduler
    (stock_poly, ) = stock_m2f.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1500)
    assert (poly.type, poly.power) == (stock_poly.type, stock_poly.power)
    assert poly.end == cfg.train_cfg.max_iters == 40000

    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert model.backbone.out_indices == tuple(BLOCKS[arch])
    assert model.neck.in_channels == model.backbone.embed_dim == EMBED[arch]
    assert model.num_classes == CLASSES[ds]
    assert model.decode_head.cls_embed.out_features == CLASSES[ds] + 1
    # Derived by the head: one weight per class, 0.1 for "no object".
    assert model.decode_head.class_weight == [1.0] * CLASSES[ds] + [0.1]
    assert model.decode_head.loss_cls.class_weight == [1.0] * CLASSES[ds] + [
        0.1
    ]
    assert model.backbone.frozen
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_every_m2f_config_is_checked():
    found = {p.stem for p in (REPO / 'configs').glob('*_m2f.py')}
    assert found == set(M2F_CONFIGS)


# DinoMask2FormerHead.predict against the formula of Meta's model (mmseg
# 0.x): per-query class probabilities without the "no object" column times
# the sigmoid of the mask logits, summed over queries at the mask
# resolution (stride 4), then resized bilinearly to the input.
def semantic_map(cls_scores, mask_logits, size):
    probs = cls_scores.softmax(-1)[..., :-1]  # (B, Q, C)
    masks = mask_logits.sigmoid()  # (B, Q, h, w)
    seg = (probs[:, :, :, None, None] * masks[:, :, None]).sum(1)
    return F.interpolate(seg, size=size, mode='bilinear', align_corners=False)


def head_outputs(model, image):
    """The last decoder layer's class scores and mask logits for one
    window, from the backbone, neck and head modules themselves."""
    metas = [dict(img_shape=tuple(image.shape[-2:]))]
    samples = [SegDataSample(metainfo=m) for m in metas]
    cls_scores, mask_logits = model.decode_head(
        model.extract_feat(image), samples)
    return cls_scores[-1], mask_logits[-1]


def test_predict_combines_at_stride_4_then_resizes(shapes_root):
    model = build_tiny(load('ade20k_vits14_m2f')).eval()
    image = torch.randn(
        2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96))] * 2
    with torch.no_grad():
        feats = model.extract_feat(image)
        got = model.decode_head.predict(feats, metas, dict(mode='whole'))
        cls_scores, mask_logits = head_outputs(model, image)
        # mmseg's own order (masks resized before the sigmoid and the sum).
        stock = Mask2FormerHead.predict(model.decode_head, feats, metas,
                                        dict(mode='whole'))
    assert mask_logits.shape[-2:] == (16, 24)  # stride 4
    want = semantic_map(cls_scores, mask_logits, (64, 96))
    assert got.shape == (2, NUM_SHAPES, 64, 96)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # The order matters: mmseg's differs, so the comparison has teeth.
    assert (stock - want).abs().max() > 1e-3


def test_slide_prediction_averages_each_windows_map(shapes_root):
    """64-pixel windows at stride 48 over a 90x125 image overlap (rows at
    y = 0, 26, columns at x = 0, 48, 61); each window's semantic map is
    resized to the window, summed into the image and divided by the number
    of windows per pixel."""
    model = build_tiny(load('voc2012_vits14_m2f')).eval()
    batch = shapes_batch(shapes_root, 'validation', 1)
    with torch.no_grad():
        result = model.val_step(batch)[0].seg_logits.data
        inputs = model.data_preprocessor(batch)['inputs']
        height, width = inputs.shape[-2:]
        total = torch.zeros(1, NUM_SHAPES, height, width)
        count = torch.zeros(1, 1, height, width)
        for top in (0, height - 64):
            for left in (0, 48, width - 64):
                window = inputs[:, :, top:top + 64, left:left + 64]
                total[..., top:top + 64, left:left + 64] += semantic_map(
                    *head_outputs(model, window), (64, 64))
                count[..., top:top + 64, left:left + 64] += 1
    assert (height, width) == (90, 125)
    assert set(count.unique().tolist()) == {1, 2, 3, 4, 6}
    torch.testing.assert_close(
        result, (total / count)[0], atol=1e-5, rtol=1e-5)


def test_class_weight_must_fit_the_class_count():
    cfg = load('voc2012_vits14_m2f')
    head = dict(cfg.model.decode_head, num_classes=5)
    with torch.device('meta'):
        built = MODELS.build(head)
        assert built.loss_cls.class_weight == [1.0] * 5 + [0.1]
        with pytest.raises(
                ValueError,
                match=re.escape('loss_cls.class_weight has 22 entries, but '
                                'num_classes=5 needs 6')):
            MODELS.build(
                dict(
                    head,
                    loss_cls=dict(
                        head['loss_cls'], class_weight=[1.0] * 21 + [0.1])))
