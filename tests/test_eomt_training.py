"""EoMT training: every size steps, masked attention against the reference
(helpers/eomt_reference.py), its annealing (EoMTMaskAnnealingHook, EoMT's
schedule), layer-wise lr decay and the two-stage warm-up, activation
checkpointing, and whole runs on the shapes data."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers.archs import TINY_ARCH
from helpers.eomt import (BLOCKS, TINY_BLOCKS, TINY_REG, build_tiny, images,
                          load, reference_weights, training_batch)
from helpers.eomt_reference import eomt_forward, normalise
from helpers.tools import check, reported_miou, run
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.registry import MODELS, PARAM_SCHEDULERS
from mmseg.structures import SegDataSample

from dinov2_seg.engine import EoMTMaskAnnealingHook
from dinov2_seg.models.backbones.dinov2 import ARCH_SETTINGS


@pytest.mark.parametrize('arch', list(BLOCKS))
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
    model.decode_head.set_iteration(0, cfg.train_cfg.max_iters)
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
    assert result.seg_logits.data.shape == (150, 28, 40)


def test_without_masked_attention_only_the_final_prediction_learns():
    model = build_tiny(masked_attention=False, mask_annealing=None)
    model.train()
    batch = model.data_preprocessor(training_batch(1, 28), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert sorted(losses) == [
        'decode.loss_cls', 'decode.loss_dice', 'decode.loss_mask'
    ]


# ------------------------------------------------- masked attention, annealing


def test_a_masked_step_without_an_iteration_is_an_error():
    """Nothing set the iteration (no EoMTMaskAnnealingHook): the masking
    probabilities would stay at 1 for the whole run."""
    model = build_tiny().train()
    batch = model.data_preprocessor(training_batch(1, 28), True)
    with pytest.raises(RuntimeError, match='EoMTMaskAnnealingHook'):
        model.loss(batch['inputs'], batch['data_samples'])


# EoMT's schedule (mask_annealing and on_train_batch_end of tue-mps/eomt's
# training/lightning_module.py, poly_power 0.9): probability 1 before a
# block's start step, 0 from its end step, (1 - progress)^0.9 between.
# ViT-L's four blocks in a run of 12000 iterations fade over 2000-4000,
# 4000-6000, 6000-8000 and 8000-10000.
VITL_12000 = {
    0: [1.0, 1.0, 1.0, 1.0],
    1999: [1.0, 1.0, 1.0, 1.0],
    3000: [0.5358867312681466, 1.0, 1.0, 1.0],  # 0.5^0.9
    4500: [0.0, 0.7718895067235705, 1.0, 1.0],  # 0.75^0.9
    7500: [0.0, 0.0, 0.2871745887492587, 1.0],  # 0.25^0.9
    9999: [0.0, 0.0, 0.0, 0.0010692345999911879],  # (1/2000)^0.9
    11999: [0.0, 0.0, 0.0, 0.0],
}


def test_masking_probability_follows_eomts_schedule():
    """The ViT-L ADE20K config's schedule in a run of 12000 iterations:
    the head's probabilities and the logged ones."""
    annealing = load('ade20k_vitl14_eomt').model.decode_head.mask_annealing
    model = build_tiny(
        num_blocks=4, mask_annealing=annealing, train_cfg=dict(num_points=16))
    model.train()
    batch = model.data_preprocessor(training_batch(1, 28), True)
    for iteration, expected in VITL_12000.items():
        model.decode_head.set_iteration(iteration, 12000)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        assert model.decode_head.attn_mask_probs.tolist() == pytest.approx(
            expected, abs=1e-6), iteration
        assert [losses[f'decode.attn_mask_prob{i}'].item()
                for i in range(4)] == pytest.approx(
                    expected, abs=1e-6)


def test_hook_refuses_a_run_that_ends_masked():
    """Masking that would still be on at the last iteration (index
    max_iters - 1) stops the run before it starts, naming both numbers."""
    runner = SimpleNamespace(model=build_tiny(), max_iters=40, iter=0)
    hook = EoMTMaskAnnealingHook()
    with pytest.raises(ValueError, match='iteration 40 .*max_iters=40'):
        hook.before_train(runner)
    runner.max_iters = 41  # block 1 ends at 40, the last iteration
    hook.before_train(runner)
    runner.iter = 40
    hook.before_train_iter(runner, 0)
    assert runner.model.decode_head.attn_mask_probs.tolist() == [0.0, 0.0]


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
    # 2400 independent draws at 0.25: 3 standard deviations are 0.027.
    assert abs(masked.float().mean().item() - 0.25) < 0.027
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


# --------------------------------------------------------------- optimiser


def test_layer_decay_and_two_stage_warm_up():
    """EoMT's configure_optimizers (training/lightning_module.py) with lr
    1e-4 and llrd 0.8: block i of the 4-block ViT gets 1e-4 * 0.8^(3 - i),
    the patch embedding and tokens block 0's, the final norm and the head
    the full lr; weight decay 0.05 everywhere."""
    model = build_tiny()
    cfg = model.cfg
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = {g['name']: g for g in wrapper.optimizer.param_groups}
    assert set(groups) == {
        n
        for n, p in model.named_parameters() if p.requires_grad
    }
    expected = {
        'backbone.patch_embed.proj.weight': 5.12e-5,
        'backbone.cls_token': 5.12e-5,
        'backbone.register_tokens': 5.12e-5,
        'backbone.blocks.0.attn.qkv.weight': 5.12e-5,
        'backbone.blocks.1.mlp.fc1.bias': 6.4e-5,
        'backbone.blocks.2.ls1.gamma': 8e-5,
        'backbone.blocks.3.norm2.weight': 1e-4,
        'backbone.norm.weight': 1e-4,
        'decode_head.query_embed.weight': 1e-4,
        'decode_head.upscale.0.conv1.weight': 1e-4,
    }
    for name, lr in expected.items():
        assert groups[name]['lr'] == pytest.approx(lr, rel=1e-9), name
    assert {g['weight_decay'] for g in groups.values()} == {0.05}

    # The two-stage schedule (TwoStageWarmupPolySchedule of EoMT),
    # shortened: head warm-up 4, backbone 6 after it, poly 0.9 to 0 at 30.
    schedule = dict(
        cfg.param_scheduler[0],
        warmup_iters=4,
        backbone_warmup_iters=6,
        end=30)
    scheduler = PARAM_SCHEDULERS.build(dict(schedule, optimizer=wrapper))
    head_group = groups['decode_head.cls_embed.weight']
    block_group = groups['backbone.blocks.2.attn.qkv.weight']
    # (step, head lr, block 2 lr): linear warm-ups, then
    # lr * (1 - (step - warm-up) / (30 - warm-up))^0.9.
    literal = [(0, 0.0, 0.0), (2, 5e-5, 0.0), (4, 1e-4, 0.0),
               (7, 1e-4 * (23 / 26)**0.9, 8e-5 * 3 / 6),
               (10, 1e-4 * (20 / 26)**0.9, 8e-5),
               (20, 1e-4 * (10 / 26)**0.9, 8e-5 * (10 / 20)**0.9)]
    steps = dict((step, (head, block)) for step, head, block in literal)
    for step in range(21):
        if step in steps:
            head, block = steps[step]
            assert head_group['lr'] == pytest.approx(head), step
            assert block_group['lr'] == pytest.approx(block), step
        wrapper.optimizer.step()
        scheduler.step()


def test_two_stage_schedule_needs_named_groups():
    model = build_tiny()
    wrapper = build_optim_wrapper(model,
                                  dict(optimizer=dict(type='AdamW', lr=1)))
    with pytest.raises(
            ValueError, match='DinoLayerDecayOptimWrapperConstructor'):
        PARAM_SCHEDULERS.build(
            dict(type='TwoStageWarmupPolyLR', end=10, optimizer=wrapper))


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    grads, calls = {}, {}
    for with_cp in (False, True):
        model = build_tiny()
        model.backbone.with_cp = with_cp
        model.train()
        model.decode_head.set_iteration(0)
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


# ------------------------------------------------------------- whole runs


def shapes_options(data) -> dict:
    """The options that point configs/demo_shapes_eomt.py at ``data``, with
    loaders in the main process."""
    options = {'data_root': str(data)}
    for loader in ('train', 'val', 'test'):
        options.update({
            f'{loader}_dataloader.dataset.data_root': str(data),
            f'{loader}_dataloader.num_workers': 0,
            f'{loader}_dataloader.persistent_workers': False
        })
    return options


class RecordProbabilities(Hook):
    """Records the masking probabilities each training iteration ran
    with."""

    def __init__(self):
        self.seen = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        probs = runner.model.decode_head.attn_mask_probs.tolist()
        self.seen[runner.iter] = probs


# demo_shapes_eomt.py's two blocks fade over 1/6-1/3 and 2/3-5/6 of the
# run: in 12 iterations over 2-4 and 8-10 (EoMT's schedule, as above).
DEMO_12 = [[1.0, 1.0]] * 3 + [[0.5358867312681466, 1.0]] + [[0.0, 1.0]] * 5 \
    + [[0.0, 0.5358867312681466]] + [[0.0, 0.0]] * 2


@pytest.mark.slow
def test_runner_anneals_a_shortened_run_and_resumes(tmp_path):
    """configs/demo_shapes_eomt.py (80 iterations) with
    ``--cfg-options train_cfg.max_iters=12`` (tools/train.py merges the
    options with merge_from_dict, as here): the schedule follows the
    shortened run, masking ends before the last iteration, and a run
    resumed from iteration 6 continues it. Without the hook the first step
    fails."""
    from dinov2_seg.datasets import generate_shapes_dataset
    data = tmp_path / 'shapes'
    generate_shapes_dataset(str(data), num_train=4, num_val=1)

    def runner(name, **options):
        cfg = load('demo_shapes_eomt')
        cfg.merge_from_dict(
            dict(
                shapes_options(data), **{
                    'train_cfg.max_iters': 12,
                    'train_cfg.val_interval': 1000,
                    'train_cfg.val_begin': 1000,
                    'default_hooks.checkpoint.interval': 6,
                    'default_hooks.checkpoint.max_keep_ckpts': 2,
                    'train_dataloader.batch_size': 1,
                    'default_hooks.logger.interval': 6,
                }, **options))
        cfg.work_dir = str(tmp_path / 'work')
        cfg.experiment_name = name
        runner = Runner.from_cfg(cfg)
        record = RecordProbabilities()
        runner.register_hook(record, priority='LOW')
        return runner, record

    bare, _ = runner('bare', custom_hooks=[])
    with pytest.raises(RuntimeError, match='EoMTMaskAnnealingHook'):
        bare.train()

    full, record = runner('full')
    full.train()
    assert sum((record.seen[i] for i in range(12)),
               []) == pytest.approx(sum(DEMO_12, []))

    resumed, record = runner(
        'resumed', resume=True, load_from=str(tmp_path / 'work/iter_6.pth'))
    resumed.train()
    assert sorted(record.seen) == list(range(6, 12))
    assert sum((record.seen[i] for i in range(6, 12)),
               []) == pytest.approx(sum(DEMO_12[6:], []))


@pytest.mark.slow
def test_shapes_run_trains_and_tests_well_above_chance(tmp_path):
    """configs/demo_shapes_eomt.py as docs/eomt.md runs it (its dataset, 80
    iterations), with loaders in the main process: tools/train.py, then
    tools/test.py on the checkpoint. Chance is about 9 mIoU; docs/eomt.md
    quotes 97.1."""
    from dinov2_seg.datasets import generate_shapes_dataset
    data = tmp_path / 'shapes'
    generate_shapes_dataset(str(data))
    options = ['--cfg-options'
               ] + [f'{k}={v}' for k, v in shapes_options(data).items()]
    config, work = 'configs/demo_shapes_eomt.py', tmp_path / 'work'
    log = check(
        run('tools/train.py', config, '--work-dir', work, '--verbose',
            *options, 'train_cfg.val_interval=1000'))
    assert 'Iter(train) [80/80]' in log
    log = check(
        run('tools/test.py', config, work / 'iter_80.pth', '--work-dir', work,
            *options))
    assert reported_miou(log) > 80, log[-3000:]
