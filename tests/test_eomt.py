"""EoMT on DINOv2: the configs of every size, training (masked attention,
its annealing, losses, layer-wise lr decay, activation checkpointing),
inference through the batched paths against an independent re-implementation
(eomt_reference.py), and EoMT's released checkpoint."""
import copy
import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS, PARAM_SCHEDULERS
from mmseg.structures import SegDataSample

from helpers.archs import TINY_ARCH

from helpers.tools import REPO, check, reported_miou, run
from helpers.eomt_reference import (class_map, eomt_forward, normalise, slide,
                            to_eomt_names)
from helpers.fabricate import eomt_manifest, fabricate_eomt_state, official_manifest
from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.eomt import convert_eomt
from dinov2_seg.models.backbones.dinov2 import ARCH_SETTINGS

EMBED = {'vits14': 384, 'vitb14': 768, 'vitl14': 1024, 'vitg14': 1536}
DEPTH = {'vits14': 12, 'vitb14': 12, 'vitl14': 24, 'vitg14': 40}
# EoMT: 3 blocks with queries for ViT-S/B, 4 for ViT-L, 5 for ViT-g.
BLOCKS = {'vits14': 3, 'vitb14': 3, 'vitl14': 4, 'vitg14': 5}
CLASSES = {'ade20k': 150, 'voc2012': 21}
EOMT_CONFIGS = [
    f'{ds}_{arch}_eomt' for ds, arch in itertools.product(CLASSES, EMBED)
]
# TINY_ARCH with 4 registers (EoMT's DINOv2 has them) and a stored
# position grid of 5 x 5 patches (img_size 70): 70-pixel windows then need
# neither padding nor a position resize, which the reference leaves out.
TINY_REG = dict(
    TINY_ARCH,
    num_register_tokens=4,
    interpolate_offset=0.0,
    interpolate_antialias=True)
TINY_BLOCKS = 2
TINY_CLASSES = 5


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def build_tiny(name: str = 'ade20k_vits14_eomt',
               arch: dict = TINY_REG,
               **head) -> torch.nn.Module:
    """A config's model with the tiny ViT (``arch``), 6 queries in its last
    2 blocks and 70-pixel windows at stride 50."""
    cfg = load(name)
    cfg.merge_from_dict(
        dict(
            model=dict(
                data_preprocessor=dict(size=(70, 70)),
                backbone=dict(
                    arch=dict(arch, _delete_=True), img_size=70,
                    init_cfg=None),
                decode_head=dict(
                    dict(
                        num_classes=TINY_CLASSES,
                        embed_dims=TINY_ARCH['embed_dim'],
                        num_queries=6,
                        num_blocks=TINY_BLOCKS,
                        mask_annealing=dict(
                            start_iters=[10, 20], end_iters=[30, 40]),
                        train_cfg=dict(num_points=256)), **head),
                test_cfg=dict(crop_size=(70, 70), stride=(50, 50)))))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    # Non-trivial LayerScale and final norm, so that every part matters.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('gamma') or name == 'backbone.norm.weight':
                param.uniform_(0.5, 1.5)
    model.cfg = cfg
    return model


def images(count: int, height: int, width: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(
            0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        for _ in range(count)
    ]


def training_batch(count: int = 2, size: int = 70) -> dict:
    generator = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(count):
        labels = torch.randint(
            0, TINY_CLASSES, (1, size, size), generator=generator)
        labels[:, :, :10] = 255
        samples.append(
            SegDataSample(
                gt_sem_seg=PixelData(data=labels),
                metainfo=dict(
                    img_shape=(size, size),
                    ori_shape=(size, size),
                    pad_shape=(size, size))))
    return dict(inputs=images(count, size, size), data_samples=samples)


def reference_weights(model) -> dict:
    return {
        k: v.detach().clone()
        for k, v in to_eomt_names(model.state_dict()).items()
    }


def set_iteration(iteration) -> None:
    MessageHub.get_current_instance().update_info('iter', iteration)


@pytest.fixture(autouse=True)
def no_runner_iteration():
    """Tests that set the message hub's iteration leave none behind."""
    hub = MessageHub.get_current_instance()
    saved = hub.runtime_info.get('iter')
    hub.runtime_info.pop('iter', None)
    yield
    hub.runtime_info.pop('iter', None)
    if saved is not None:
        hub.update_info('iter', saved)


# ------------------------------------------------------------------ configs


def expected_annealing(blocks: int, total: int = 40000):
    """EoMT's rule (its ADE20K-L and COCO S/B/g configs): each block's
    masking fades over total/6, the first from total/6, the last ending at
    5 * total/6."""
    starts = [
        total / 6 + i * (total / 2) / (blocks - 1) for i in range(blocks)
    ]
    return [round(s) for s in starts], [round(s + total / 6) for s in starts]


def head_manifest(dim: int, classes: int, blocks: int) -> dict:
    """EoMT's head (models/eomt.py) in this project's names."""
    shapes = {
        'decode_head.query_embed.weight': (100, dim),
        'decode_head.cls_embed.weight': (classes + 1, dim),
        'decode_head.cls_embed.bias': (classes + 1, ),
        'decode_head.attn_mask_probs': (blocks, ),
    }
    for i in (0, 2, 4):
        shapes[f'decode_head.mask_embed.{i}.weight'] = (dim, dim)
        shapes[f'decode_head.mask_embed.{i}.bias'] = (dim, )
    for i in (0, 1):
        p = f'decode_head.upscale.{i}.'
        shapes.update({
            p + 'conv1.weight': (dim, dim, 2, 2),
            p + 'conv1.bias': (dim, ),
            p + 'conv2.weight': (dim, 1, 3, 3),
            p + 'norm.weight': (dim, ),
            p + 'norm.bias': (dim, ),
        })
    return shapes


@pytest.mark.parametrize('name', EOMT_CONFIGS)
def test_config(name):
    ds, arch, _ = name.split('_')
    cfg = load(name)
    model = cfg.model
    assert model.type == 'EoMTSegmentor'
    backbone = model.backbone
    assert (backbone.arch, backbone.frozen, backbone.with_cp,
            backbone.drop_path_rate) == (f'{arch}_reg4', False,
                                         arch == 'vitg14', 0.0)
    assert backbone.init_cfg.checkpoint == (
        f'checkpoints/dinov2_{arch}_reg4_pretrain.pth')
    head = model.decode_head
    assert (head.type, head.num_classes, head.embed_dims, head.num_queries,
            head.num_blocks, head.num_upscale) == ('EoMTHead', CLASSES[ds],
                                                   EMBED[arch], 100,
                                                   BLOCKS[arch], 2)
    starts, ends = expected_annealing(BLOCKS[arch])
    assert head.mask_annealing == dict(
        start_iters=starts, end_iters=ends, power=0.9)
    assert (head.no_object_weight, head.loss_cls.loss_weight,
            head.loss_mask.loss_weight,
            head.loss_dice.loss_weight) == (0.1, 2.0, 5.0, 5.0)
    assert head.train_cfg.num_points == 12544
    assert model.test_cfg == dict(
        mode='slide',
        crop_size=(512, 512),
        stride=(341, 341),
        fast_inference=True,
        window_batch_size=None)

    # EoMT's optimisation.
    wrapper = cfg.optim_wrapper
    assert (wrapper.optimizer.type, wrapper.optimizer.lr,
            wrapper.optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg == dict(layer_decay_rate=0.8)
    schedule, = cfg.param_scheduler
    assert (schedule.type, schedule.warmup_iters,
            schedule.backbone_warmup_iters, schedule.power,
            schedule.end) == ('TwoStageWarmupPolyLR', 500, 1000, 0.9, 40000)
    assert cfg.train_cfg.max_iters == 40000
    # EoMT's augmentation: scale jitter 0.5-2 of a 512 longer side, plain
    # 512 crop, flip, colour jitter.
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
        'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs'
    ]
    assert (pipeline[2].scale, pipeline[2].ratio_range,
            pipeline[2].keep_ratio) == ((512, 512), (0.5, 2.0), True)
    assert pipeline[3] == dict(type='RandomCrop', crop_size=(512, 512))
    assert cfg.train_dataloader.batch_size == 2

    # The whole model on the meta device: Meta's backbone layout (so that
    # the backbone file loads via init_cfg) plus EoMT's head.
    with torch.device('meta'):
        segmentor = MODELS.build(model)
    expected = {
        f'backbone.{k}': v
        for k, v in official_manifest(f'{arch}_reg4').items()
    }
    expected.update(head_manifest(EMBED[arch], CLASSES[ds], BLOCKS[arch]))
    found = {k: tuple(v.shape) for k, v in segmentor.state_dict().items()}
    assert found == expected
    assert segmentor.decode_head.class_weight == [1.0] * CLASSES[ds] + [0.1]
    assert all(p.requires_grad for n, p in segmentor.named_parameters()
               if n != 'backbone.mask_token')


def test_every_eomt_config_is_checked():
    found = {p.stem for p in (REPO / 'configs').glob('*_eomt.py')}
    # The demo is built and trained by the shapes run below.
    assert found == set(EOMT_CONFIGS) | {'demo_shapes_eomt'}


@pytest.mark.parametrize('arch', list(EMBED))
def test_every_size_trains_and_predicts(arch):
    """A training step with the config's optimiser (every trainable
    parameter moves: the whole ViT is fine-tuned) and a slide prediction,
    on 28-pixel inputs. ViT-S at full depth; the others at full width with
    one block before the queries, to keep the test fast."""
    cfg = load(f'ade20k_{arch}_eomt')
    cfg.model.backbone.init_cfg = None
    if arch != 'vits14':
        cfg.model.backbone.arch = dict(
            ARCH_SETTINGS[f'{arch}_reg4'], depth=BLOCKS[arch] + 1)
    cfg.model.data_preprocessor.size = (28, 28)
    cfg.model.decode_head.train_cfg.num_points = 64
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.clone() for k, v in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    samples = [
        SegDataSample(
            gt_sem_seg=PixelData(
                data=torch.randint(0, 150, (1, 28, 28), generator=generator)),
            metainfo=dict(
                img_shape=(28, 28), ori_shape=(28, 28), pad_shape=(28, 28)))
        for _ in range(2)
    ]
    batch = dict(inputs=images(2, 28, 28), data_samples=samples)
    model.train()
    losses = model.train_step(batch, wrapper)
    # Deep supervision: the final prediction and one per block with
    # queries.
    assert {k
            for k in losses if k.endswith('loss_dice')
            } == {'decode.loss_dice'
                  } | {f'decode.d{i}.loss_dice'
                       for i in range(BLOCKS[arch])}
    assert all(torch.isfinite(v) for v in losses.values())
    unchanged = [
        name for name, param in model.named_parameters()
        if param.requires_grad and torch.equal(param, before[name])
    ]
    assert unchanged == []

    model.eval()
    with torch.no_grad():
        result = model.test_step(
            dict(
                inputs=images(1, 28, 40),
                data_samples=[
                    SegDataSample(
                        metainfo=dict(img_shape=(28, 40), ori_shape=(28, 40)))
                ]))[0]
    probs = result.seg_logits.data
    assert probs.shape == (150, 28, 40)
    assert probs.min() >= 0 and probs.sum(0).max() <= 100


def test_head_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match='one iteration per block'):
        build_tiny(mask_annealing=dict(start_iters=[1], end_iters=[2]))
    with pytest.raises(ValueError, match=r'embed_dims=32 differs.*48'):
        build_tiny(embed_dims=32)
    with pytest.raises(ValueError, match='num_blocks=5.*all 4 blocks'):
        build_tiny(
            num_blocks=5,
            mask_annealing=dict(start_iters=[1] * 5, end_iters=[2] * 5))
    with pytest.raises(ValueError, match='needs mask_annealing'):
        build_tiny(mask_annealing=None)
    with pytest.raises(ValueError, match=r'class_weight has 3 entries.*6'):
        build_tiny(loss_cls=dict(class_weight=[1.0, 1.0, 0.1]))


def test_without_masked_attention_only_the_final_prediction_learns():
    model = build_tiny(masked_attention=False, mask_annealing=None)
    model.train()
    batch = model.data_preprocessor(training_batch(1, 28), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert sorted(losses) == [
        'decode.loss_cls', 'decode.loss_dice', 'decode.loss_mask'
    ]


# ------------------------------------------------- masked attention, annealing


def annealing_probability(iteration, start, end, power=0.9):
    if iteration < start:
        return 1.0
    if iteration >= end:
        return 0.0
    return (1 - (iteration - start) / (end - start))**power


def test_masking_probability_follows_the_schedule():
    """The runner's iteration (message hub) sets each block's masking
    probability to EoMT's schedule, here the ViT-L ADE20K config's."""
    cfg = load('ade20k_vitl14_eomt')
    annealing = cfg.model.decode_head.mask_annealing
    model = build_tiny(
        num_blocks=4, mask_annealing=annealing, train_cfg=dict(num_points=16))
    model.train()
    batch = model.data_preprocessor(training_batch(1, 28), True)
    for iteration in (0, 6666, 6667, 10000, 13333, 16000, 26667, 30000, 33332,
                      33333, 39999):
        set_iteration(iteration)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        expected = [
            annealing_probability(iteration, s, e)
            for s, e in zip(annealing.start_iters, annealing.end_iters)
        ]
        assert model.decode_head.attn_mask_probs.tolist() == pytest.approx(
            expected, abs=1e-6), iteration
        assert [losses[f'decode.attn_mask_prob{i}'].item()
                for i in range(4)] == pytest.approx(
                    expected, abs=1e-6)
    # Spot values: halfway through block 0's fade, 0.5^0.9.
    set_iteration(10000)
    model.loss(batch['inputs'], batch['data_samples'])
    assert model.decode_head.attn_mask_probs[0].item() == pytest.approx(
        0.5**0.9, abs=1e-3)


def test_each_query_is_masked_with_the_block_probability():
    head = build_tiny().decode_head
    head.attn_mask_probs.copy_(torch.tensor([0.25, 1.0]))
    # Every mask logit negative: a masked query sees no patch at all.
    mask_logits = -torch.ones(400, 6, 20, 20)
    torch.manual_seed(0)
    mask = head.attention_mask(mask_logits, (5, 5), 0, 5)
    queries, prefix = 6, 5
    assert mask.shape == (400, 6 + 5 + 25, 6 + 5 + 25)
    patch_rows = mask[:, :queries, queries + prefix:]
    masked = ~patch_rows.any(-1)
    # Rows are all-or-nothing, and the rest of the matrix stays open.
    assert torch.equal(patch_rows.all(-1), ~masked)
    assert mask[:, :, :queries + prefix].all()
    assert mask[:, queries:].all()
    assert abs(masked.float().mean().item() - 0.25) < 0.02
    # Probability 1: every query, on the logits' sign.
    mask_logits[:, :, :10] = 1
    mask = head.attention_mask(mask_logits, (5, 5), 1, 5)
    inside = F.interpolate(mask_logits, (5, 5), mode='bilinear') > 0
    assert torch.equal(mask[:, :queries, queries + prefix:], inside.flatten(2))
    head.attn_mask_probs.zero_()
    assert head.attention_mask(mask_logits, (5, 5), 0, 5) is None


@pytest.mark.parametrize(
    'arch', [TINY_REG, TINY_ARCH], ids=['registers', 'no_registers'])
def test_masked_training_forward_matches_the_reference(arch):
    """With masking probability 1 every query of the blocks with queries
    attends only inside its mask predicted before the block: every
    block's prediction equals the reference's (DINOv2 with and without
    registers)."""
    model = build_tiny(arch=arch)
    set_iteration(0)
    model.train()
    model.decode_head.set_iteration(0)
    inputs = torch.stack([normalise(x) for x in images(2, 70, 70)])
    predictions = model.extract_feat(inputs)
    reference = eomt_forward(
        reference_weights(model),
        inputs,
        heads=TINY_ARCH['num_heads'],
        num_blocks=TINY_BLOCKS,
        masked=True)
    assert len(predictions) == len(reference) == TINY_BLOCKS + 1
    for (masks, classes), (ref_masks,
                           ref_classes) in zip(predictions, reference):
        torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(classes, ref_classes, atol=1e-4, rtol=1e-4)
    # The masks matter: the plain ViT predicts something else.
    plain = eomt_forward(
        reference_weights(model),
        inputs,
        heads=TINY_ARCH['num_heads'],
        num_blocks=TINY_BLOCKS)[-1]
    assert (plain[0] - reference[-1][0]).abs().max() > 1e-3


def test_annealed_training_attention_equals_inference_attention():
    model = build_tiny()
    model.decode_head.set_iteration(40)  # every block's end: probability 0
    assert model.decode_head.attn_mask_probs.tolist() == [0.0, 0.0]
    inputs = torch.stack([normalise(x) for x in images(2, 70, 70)])
    model.train()
    training = model.extract_feat(inputs)
    model.eval()
    with torch.no_grad():
        inference = model.extract_feat(inputs)
    assert len(training) == TINY_BLOCKS + 1 and len(inference) == 1
    torch.testing.assert_close(training[-1][0], inference[-1][0])
    torch.testing.assert_close(training[-1][1], inference[-1][1])
    # ... and both are the plain ViT of the reference.
    reference = eomt_forward(
        reference_weights(model),
        inputs,
        heads=TINY_ARCH['num_heads'],
        num_blocks=TINY_BLOCKS)
    torch.testing.assert_close(
        inference[-1][0], reference[-1][0], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- inference


def predict(model, image, fast: bool = True):
    model.test_cfg.fast_inference = fast
    sample = SegDataSample(
        metainfo=dict(img_shape=image.shape[-2:], ori_shape=image.shape[-2:]))
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0]


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


def test_multi_scale_flip_test_takes_the_batched_path():
    """The recipe's multi-scale flip test (two scales, two flips) through
    BatchedSegTTAModel: the softmax of each view's stock slide inference,
    averaged."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    model = build_tiny().eval()
    pipeline = copy.deepcopy(model.cfg.tta_pipeline)
    pipeline[0] = dict(type='LoadImageFromNDArray')
    stages = pipeline[1].transforms
    stages[0] = stages[0][:2]
    pipeline[1].transforms = [
        stage for stage in stages if stage[0].type != 'LoadAnnotations'
    ]
    image = images(1, 60, 90, seed=5)[0].permute(1, 2, 0).numpy()
    data = pseudo_collate([Compose(pipeline)(dict(img=image))])
    assert len(data['inputs']) == 4
    tta = MODELS.build(dict(type='BatchedSegTTAModel', module=model))
    with torch.no_grad():
        fast = tta.test_step(copy.deepcopy(data))[0]
        model.test_cfg.fast_inference = False
        views = [
            model.test_step({
                k: v[i]
                for k, v in copy.deepcopy(data).items()
            })[0] for i in range(4)
        ]
    expected = sum(v.seg_logits.data.softmax(0) for v in views) / 4
    assert fast.seg_logits.data.shape == (TINY_CLASSES, 60, 90)
    torch.testing.assert_close(
        fast.seg_logits.data, expected, atol=1e-5, rtol=1e-4)
    assert views[1].flip and views[1].img_shape != views[2].img_shape


# --------------------------------------------------------------- optimiser


def test_layer_decay_and_two_stage_warm_up():
    model = build_tiny()
    cfg = model.cfg
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    depth = TINY_ARCH['depth']
    groups = {g['name']: g for g in wrapper.optimizer.param_groups}
    assert set(groups) == {
        n
        for n, p in model.named_parameters() if p.requires_grad
    }
    for name, group in groups.items():
        if name.startswith('backbone.blocks.'):
            factor = 0.8**(depth - 1 - int(name.split('.')[2]))
        elif name.startswith(('backbone.patch_embed', 'backbone.cls_token',
                              'backbone.pos_embed', 'backbone.register',
                              'backbone.mask_token')):
            factor = 0.8**(depth - 1)
        else:  # the final norm and the head
            factor = 1.0
        assert group['lr'] == pytest.approx(1e-4 * factor), name
        assert group['weight_decay'] == 0.05, name

    # The two-stage schedule, shortened: head warm-up 4, backbone 6 after
    # it, poly 0.9 to 0 at 30.
    schedule = dict(
        cfg.param_scheduler[0],
        warmup_iters=4,
        backbone_warmup_iters=6,
        end=30)
    scheduler = PARAM_SCHEDULERS.build(dict(schedule, optimizer=wrapper))
    head_group = groups['decode_head.cls_embed.weight']
    block_group = groups['backbone.blocks.1.attn.qkv.weight']
    block_lr = 1e-4 * 0.8**(depth - 2)
    for step in range(30):
        if step < 4:
            head, block = step / 4, 0.0
        else:
            head = (1 - (step - 4) / 26)**0.9
            if step < 10:
                block = (step - 4) / 6
            else:
                block = (1 - (step - 10) / 20)**0.9
        assert head_group['lr'] == pytest.approx(1e-4 * head), step
        assert block_group['lr'] == pytest.approx(block_lr * block), step
        wrapper.optimizer.step()
        scheduler.step()


def test_two_stage_schedule_needs_named_groups():
    model = build_tiny()
    wrapper = build_optim_wrapper(model,
                                  dict(optimizer=dict(type='AdamW', lr=1)))
    with pytest.raises(ValueError, match='LayerDecayOptimWrapperConstructor'):
        PARAM_SCHEDULERS.build(
            dict(type='TwoStageWarmupPolyLR', end=10, optimizer=wrapper))


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    grads, calls = {}, {}
    for with_cp in (False, True):
        model = build_tiny()
        model.backbone.with_cp = with_cp
        model.train()
        count = [0]
        block = model.backbone.blocks[1]
        forward = block.forward

        def counted(*args, forward=forward, count=count):
            count[0] += 1
            return forward(*args)

        block.forward = counted
        batch = model.data_preprocessor(training_batch(), True)
        torch.manual_seed(0)  # the same points and masked queries
        losses = model.loss(batch['inputs'], batch['data_samples'])
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads[with_cp] = {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.grad is not None
        }
        calls[with_cp] = count[0]
    assert calls == {False: 1, True: 2}  # forward, then the recomputation
    assert grads[True].keys() == grads[False].keys()
    for name, grad in grads[False].items():
        torch.testing.assert_close(
            grads[True][name], grad, atol=1e-6, rtol=1e-5, msg=name)


# ------------------------------------------------ EoMT's released checkpoint

TINY_FILE = dict(
    dim=48,
    depth=4,
    mlp_dim=192,
    registers=4,
    grid=4,
    patch=16,
    num_queries=6,
    num_classes=150,
    num_blocks=2)


def build_official_tiny(num_classes: int = 150):
    """configs/ade20k_vitl14_eomt_official.py at the tiny file's sizes:
    patch 16, a 4 x 4 position grid (64 pixels)."""
    cfg = load('ade20k_vitl14_eomt_official')
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(arch=dict(TINY_REG, _delete_=True), img_size=64),
                decode_head=dict(
                    num_classes=num_classes,
                    embed_dims=48,
                    num_queries=6,
                    num_blocks=2,
                    mask_annealing=dict(start_iters=[1, 2], end_iters=[2, 3])),
                test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))))
    return MODELS.build(cfg.model).eval()


def test_released_checkpoint_loads_strictly_and_predicts_as_eomt(tmp_path):
    state = fabricate_eomt_state(**TINY_FILE)
    path = tmp_path / 'ade20k_semantic_eomt_large_512.bin'
    torch.save(state, path)
    model = build_official_tiny()
    load_segmentor_checkpoint(model, str(path))
    loaded = model.state_dict()
    b = 'network.encoder.backbone.'
    assert torch.equal(loaded['backbone.register_tokens'],
                       state[b + 'reg_token'])
    assert torch.equal(loaded['backbone.pos_embed'][:, 1:],
                       state[b + 'pos_embed'])
    assert not loaded['backbone.pos_embed'][:, 0].any()
    assert torch.equal(loaded['decode_head.query_embed.weight'],
                       state['network.q.weight'])

    # EoMT's evaluation of a 64 x 100 image: windows at 0 and 36, mask
    # logits upsampled to the window before the sigmoid.
    image = images(1, 64, 100, seed=7)[0]

    def window_map(window):
        masks, classes = eomt_forward(
            state, window, heads=TINY_ARCH['num_heads'], num_blocks=2)[-1]
        return class_map(masks, classes, window.shape[-2:])

    expected = slide(normalise(image), window_map, 64, 48)
    result = predict(model, image)
    torch.testing.assert_close(
        result.seg_logits.data, expected, atol=1e-4, rtol=1e-4)


def test_released_checkpoint_errors(tmp_path):
    state = fabricate_eomt_state(**TINY_FILE)
    path = tmp_path / 'eomt.bin'
    torch.save(dict(state, **{'network.extra.weight': torch.zeros(1)}), path)
    with pytest.raises(
            ValueError, match=r'Unexpected keys \(1\): '
            r'network\.extra\.weight'):
        load_segmentor_checkpoint(build_official_tiny(), str(path))
    torch.save(state, path)
    with pytest.raises(
            ValueError, match='predicts 150 classes, the config 21'):
        load_segmentor_checkpoint(build_official_tiny(21), str(path))
    state['network.encoder.pixel_mean'] = torch.full((1, 3, 1, 1), 0.5)
    torch.save(state, path)
    with pytest.raises(ValueError, match='pixel_mean.*ImageNet'):
        load_segmentor_checkpoint(build_official_tiny(), str(path))


def test_released_checkpoint_full_manifest_fits_the_official_config():
    """Every tensor of the released EoMT-L file (names and shapes from
    EoMT's modules) has its place in configs/ade20k_vitl14_eomt_official.py,
    none missing: checked on the meta device."""
    with torch.device('meta'):
        state = {
            name: torch.empty(shape)
            for name, shape in eomt_manifest().items()
        }
        model = MODELS.build(load('ade20k_vitl14_eomt_official').model)
    pixel_stats = {k: v for k, v in state.items() if 'pixel_' in k}
    assert len(pixel_stats) == 2
    for key in pixel_stats:  # values cannot be checked on meta tensors
        state.pop(key)
    converted = {k: tuple(v.shape) for k, v in convert_eomt(state).items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert converted == expected
    assert len(expected) == 24 * 14 + 8 + 3 * 2 + 2 * 5 + 4


# -------------------------------------------------------------- shapes run


def test_shapes_run_trains_and_tests_well_above_chance(tmp_path):
    """configs/demo_shapes_eomt.py as the README runs it (its dataset, 80
    iterations), with loaders in the main process: tools/train.py, then
    tools/test.py on the checkpoint. Chance is about 9 mIoU; the README
    quotes 97.1."""
    from dinov2_seg.datasets import generate_shapes_dataset
    data = tmp_path / 'shapes'
    generate_shapes_dataset(str(data))
    options = ['--cfg-options', f'data_root={data}']
    for loader in ('train', 'val', 'test'):
        options += [
            f'{loader}_dataloader.dataset.data_root={data}',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False'
        ]
    config, work = 'configs/demo_shapes_eomt.py', tmp_path / 'work'
    log = check(
        run('tools/train.py', config, '--work-dir', work, '--verbose',
            *options, 'train_cfg.val_interval=1000'))
    assert 'Iter(train) [80/80]' in log
    log = check(
        run('tools/test.py', config, work / 'iter_80.pth', '--work-dir', work,
            *options))
    assert reported_miou(log) > 80, log[-3000:]


def tiny_eomt_config(tmp_path, queries: int) -> str:
    path = tmp_path / f'tiny_eomt_{queries}.py'
    path.write_text(f"""
_base_ = [{str(REPO / 'configs' / 'ade20k_vits14_eomt.py')!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_REG!r}), init_cfg=None),
    decode_head=dict(embed_dims={TINY_ARCH['embed_dim']},
                     num_queries={queries}, num_blocks=2,
                     mask_annealing=dict(start_iters=[1, 2],
                                         end_iters=[2, 3])),
    test_cfg=dict(crop_size=(70, 70), stride=(50, 50), window_batch_size=8))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
""")
    return str(path)


def test_benchmark_times_another_config_on_the_same_images(tmp_path):
    """tools/benchmark.py --against: both models through their fast path,
    alternating; the record names the other config and the ratio."""
    from dinov2_seg.apis.benchmark import main
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
    assert record['speedup_vs_against'] == pytest.approx(
        record['against_seconds'] / record['seconds'])
    # 36 more queries of 48 numbers in the other model.
    assert record['against_parameters'] - record['parameters'] == 36 * 48
    # Two 70-pixel windows over 60 x 90, in one backbone call.
    assert (record['windows'], record['backbone_calls']) == (2, 1)
    # Peaks count the float32 weights and the live tensors of a run.
    assert record['peak_bytes'] > 4 * record['parameters']
    assert record['against_peak_bytes'] > 4 * record['against_parameters']


def test_head_without_losses_names_the_shared_base():
    with pytest.raises(ValueError, match='mask2former_losses.py'):
        MODELS.build(
            dict(
                type='EoMTHead',
                num_classes=3,
                embed_dims=32,
                masked_attention=False,
                train_cfg=dict(num_points=16)))


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
