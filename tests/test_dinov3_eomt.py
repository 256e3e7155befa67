"""EoMT on DINOv3 ViTs: the forward against a plain-torch reference written
here from EoMT's definitions (queries in front of the class and storage
tokens for the last blocks, masked attention, RoPE on the patches only),
the configs of every size against EoMT's DINOv3 ADE20K 512 recipe
(tue-mps/eomt configs/dinov3/ade20k/semantic/eomt_large_512.yaml), and a
training step."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers.eomt import images, training_batch
from helpers.eomt_reference import normalise
from helpers.tools import REPO, check, reported_miou, run
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS, PARAM_SCHEDULERS

from dinov2_seg.models.backbones.dinov3_layers import apply_rope
from dinov2_seg.models.decode_heads.eomt_head import num_upscale_for_patch

ARCHS = {
    # arch: (embed dim, depth, blocks with queries)
    'vits16': (384, 12, 3),
    'vits16plus': (384, 12, 3),
    'vitb16': (768, 12, 3),
    'vitl16': (1024, 24, 4),
    'vitl16plus': (1024, 24, 4),
    'vith16plus': (1280, 32, 5),
    'vit7b16': (4096, 40, 5),
}
CLASSES = {'ade20k': 150, 'voc2012': 21}
CONFIGS = [f'dinov3/{ds}_{arch}_eomt' for ds in CLASSES for arch in ARCHS]
# eomt_large_512.yaml (DINOv3): attn_mask_annealing_start_steps and
# end_steps for its 4 blocks; for 3 and 5 blocks (no EoMT config) the first
# block keeps 0-3000 and the others split 6520-16300 evenly.
ANNEALING = {
    4: ([0, 6520, 9780, 13040], [3000, 9780, 13040, 16300]),
    3: ([0, 6520, 11410], [3000, 11410, 16300]),
    5: ([0, 6520, 8965, 11410, 13855], [3000, 8965, 11410, 13855, 16300]),
}
TINY = dict(embed_dim=48, depth=4, num_heads=3)
TINY_QUERIES, TINY_BLOCKS, TINY_CLASSES = 6, 2, 5


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def build_tiny(size=(64, 80), augment=None) -> torch.nn.Module:
    """configs/dinov3/ade20k_vits16_eomt.py with a 4-block, 48-wide
    DINOv3 ViT (4 storage tokens), 6 queries in its last 2 blocks."""
    cfg = load('dinov3/ade20k_vits16_eomt')
    cfg.merge_from_dict(
        dict(
            model=dict(
                data_preprocessor=dict(size=size),
                backbone=dict(
                    arch=dict(TINY, _delete_=True),
                    init_cfg=None,
                    rope_train_augment=augment),
                decode_head=dict(
                    num_classes=TINY_CLASSES,
                    embed_dims=TINY['embed_dim'],
                    num_queries=TINY_QUERIES,
                    num_blocks=TINY_BLOCKS,
                    mask_annealing=dict(
                        _delete_=True,
                        start_iters=[10, 20],
                        end_iters=[30, 40]),
                    train_cfg=dict(num_points=256)),
                test_cfg=dict(crop_size=size, stride=size))))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    # Non-trivial LayerScale and final norm, and sharper attention than
    # the initialisation's near-uniform one, so that every part (RoPE
    # included) changes the predictions well beyond the tolerances.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('gamma') or name == 'backbone.norm.weight':
                param.uniform_(0.5, 1.5)
            elif name.endswith('attn.qkv.weight'):
                param.mul_(10)
    model.cfg = cfg
    return model


# --- The reference: EoMT's forward on a DINOv3 ViT in plain torch, from
# the state dict (independent of the modules under test).


def rope_tables(grid, head_dim: int, base: float = 100.0):
    """DINOv3's RoPE: cell centres normalised to [-1, 1] per axis, periods
    base ** (i / (head_dim / 4)), row angles then column angles, twice."""
    height, width = grid
    rows = (torch.arange(height) + 0.5) / height * 2 - 1
    cols = (torch.arange(width) + 0.5) / width * 2 - 1
    quarter = head_dim // 4
    periods = base**(torch.arange(quarter) / quarter)
    angles = []
    for r in rows:
        for c in cols:
            angles.append(
                torch.cat(
                    [2 * math.pi * r / periods, 2 * math.pi * c / periods]))
    angles = torch.stack(angles).repeat(1, 2)
    return angles.sin(), angles.cos()


def rotate_patches(x, sin, cos):
    """Rotate-half RoPE on the last h * w tokens only."""
    rest, patches = x[..., :-len(sin), :], x[..., -len(sin):, :]
    first, second = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat([-second, first], -1) * sin
    return torch.cat([rest, rotated], -2)


def reference_forward(model, x, masked: bool):
    """EoMT (models/eomt.py of tue-mps/eomt) on a DINOv3 ViT: every
    prediction (mask logits, class logits), before each block with
    queries when ``masked`` (each query then attends only inside its
    predicted mask) and after the last block."""
    w = {k: v.detach() for k, v in model.state_dict().items()}
    heads, eps = TINY['num_heads'], 1e-5
    dim, depth = TINY['embed_dim'], TINY['depth']
    patches = F.conv2d(
        x,
        w['backbone.patch_embed.proj.weight'],
        w['backbone.patch_embed.proj.bias'],
        stride=16)
    batch, _, height, width = patches.shape
    grid = (height, width)
    sin, cos = rope_tables(grid, dim // heads)
    prefix = 5  # class token and 4 storage tokens
    tokens = torch.cat([
        w['backbone.cls_token'].expand(batch, -1, -1),
        w['backbone.storage_tokens'].expand(batch, -1, -1),
        patches.flatten(2).transpose(1, 2)
    ], 1)

    def norm(t):
        return F.layer_norm(t, (dim, ), w['backbone.norm.weight'],
                            w['backbone.norm.bias'], eps)

    def predict(t):
        t = norm(t)
        queries = t[:, :TINY_QUERIES]
        maps = t[:, TINY_QUERIES + prefix:].transpose(1, 2).reshape(
            batch, dim, *grid)
        for i in range(2):  # EoMT's upscale for patch 16
            p = f'decode_head.upscale.{i}.'
            maps = F.conv_transpose2d(
                maps, w[p + 'conv1.weight'], w[p + 'conv1.bias'], stride=2)
            maps = F.conv2d(
                F.gelu(maps), w[p + 'conv2.weight'], padding=1, groups=dim)
            maps = F.layer_norm(
                maps.permute(0, 2, 3, 1), (dim, ), w[p + 'norm.weight'],
                w[p + 'norm.bias'], 1e-6).permute(0, 3, 1, 2)
        embed = queries
        for i in (0, 2, 4):
            embed = F.linear(embed, w[f'decode_head.mask_embed.{i}.weight'],
                             w[f'decode_head.mask_embed.{i}.bias'])
            if i < 4:
                embed = F.gelu(embed)
        masks = torch.einsum('bqc,bchw->bqhw', embed, maps)
        classes = F.linear(queries, w['decode_head.cls_embed.weight'],
                           w['decode_head.cls_embed.bias'])
        return masks, classes

    def block(i, t, mask):
        p = f'backbone.blocks.{i}.'
        n = t.shape[1]
        h = F.layer_norm(t, (dim, ), w[p + 'norm1.weight'],
                         w[p + 'norm1.bias'], eps)
        bias = w[p + 'attn.qkv.bias'].clone()
        bias[dim:2 * dim] = 0  # DINOv3's masked key bias
        qkv = F.linear(h, w[p + 'attn.qkv.weight'], bias)
        q, k, v = qkv.reshape(batch, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = rotate_patches(q, sin, cos), rotate_patches(k, sin, cos)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dim // heads)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float('-inf'))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, n, dim)
        out = F.linear(out, w[p + 'attn.proj.weight'], w[p + 'attn.proj.bias'])
        t = t + w[p + 'ls1.gamma'] * out
        h = F.layer_norm(t, (dim, ), w[p + 'norm2.weight'],
                         w[p + 'norm2.bias'], eps)
        h = F.linear(
            F.gelu(
                F.linear(h, w[p + 'mlp.fc1.weight'], w[p + 'mlp.fc1.bias'])),
            w[p + 'mlp.fc2.weight'], w[p + 'mlp.fc2.bias'])
        return t + w[p + 'ls2.gamma'] * h

    predictions = []
    for i in range(depth):
        mask = None
        if i == depth - TINY_BLOCKS:
            tokens = torch.cat([
                w['decode_head.query_embed.weight'].expand(batch, -1, -1),
                tokens
            ], 1)
        if masked and i >= depth - TINY_BLOCKS:
            masks, classes = predict(tokens)
            predictions.append((masks, classes))
            n = tokens.shape[1]
            inside = F.interpolate(masks, grid, mode='bilinear') > 0
            mask = torch.ones(batch, n, n, dtype=torch.bool)
            mask[:, :TINY_QUERIES, TINY_QUERIES + prefix:] = inside.flatten(2)
        tokens = block(i, tokens, mask)
    predictions.append(predict(tokens))
    return predictions


def inputs(size=(64, 80)):
    return torch.stack([normalise(x) for x in images(2, *size)])


def test_queries_are_not_rotated():
    """DINOv3's apply_rope rotates the last h * w tokens: with the queries
    in front of the class and storage tokens, the patches are still last
    and the queries keep their values."""
    grid, head_dim = (3, 4), 16
    sin, cos = rope_tables(grid, head_dim)
    x = torch.randn(2, 3, TINY_QUERIES + 5 + 12, head_dim)
    rotated = apply_rope(x, (sin, cos))
    torch.testing.assert_close(rotated[..., :TINY_QUERIES + 5, :],
                               x[..., :TINY_QUERIES + 5, :])
    torch.testing.assert_close(rotated, rotate_patches(x, sin, cos))


def test_upscale_follows_the_patch_size():
    """EoMT's rule max(1, int(log2(patch)) - 2): 2 blocks (stride 4) for
    DINOv3's patch 16; the DINOv3 configs leave it to the backbone."""
    assert [num_upscale_for_patch(p) for p in (8, 14, 16, 32)] == [1, 1, 2, 3]
    model = build_tiny()
    assert model.decode_head.num_upscale == 2
    assert len(model.decode_head.upscale) == 2
    with torch.no_grad():
        masks, _ = model.eval().extract_feat(inputs())[-1]
    assert masks.shape[-2:] == (16, 20)  # 64 x 80 pixels at stride 4


@pytest.mark.parametrize('masked', [True, False])
def test_forward_matches_the_reference(masked):
    """Masked (training, masking probability 1: every query attends only
    inside its mask) and plain (test) forward against the reference, on a
    non-square grid (4 x 5 patches)."""
    model = build_tiny()
    x = inputs()
    if masked:
        model.train()
        model.decode_head.set_iteration(0)
    else:
        model.eval()
    with torch.no_grad():
        predictions = model.extract_feat(x)
    reference = reference_forward(model, x, masked)
    assert len(predictions) == len(reference) == (
        TINY_BLOCKS + 1 if masked else 1)
    for (masks, classes), (ref_masks,
                           ref_classes) in zip(predictions, reference):
        torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(classes, ref_classes, atol=1e-4, rtol=1e-4)
    if masked:  # the masks matter
        plain = reference_forward(model, x, masked=False)[-1][0]
        assert (plain - reference[-1][0]).abs().max() > 1e-3


def test_blocks_before_the_queries_are_the_backbones():
    """With the masking annealed away (probability 0), the tokens entering
    the first block with queries are the backbone's own after its first
    depth - num_blocks blocks."""
    model = build_tiny().train()
    model.decode_head.set_iteration(10**6)
    assert float(model.decode_head.attn_mask_probs.sum()) == 0
    backbone, x = model.backbone, inputs()
    seen = []
    first = TINY['depth'] - TINY_BLOCKS
    hook = backbone.blocks[first].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model.extract_feat(x)
        hook.remove()
        backbone.out_indices = (first - 1, )
        outputs, _ = backbone.intermediate_tokens(x)
    # intermediate_tokens applies the final norm (final_norm=True).
    tokens = seen[0][:, TINY_QUERIES:]
    torch.testing.assert_close(backbone.norm(tokens), outputs[0])
    torch.testing.assert_close(seen[0][0, :TINY_QUERIES],
                               model.decode_head.query_embed.weight)


def test_training_step_reaches_the_backbone():
    """One loss + backward of the reduced config with its RoPE rescale
    augmentation: finite losses, gradients in the first backbone block
    and the patch embedding; the optimiser gives every parameter 2e-4."""
    model = build_tiny(size=(64, 64), augment=dict(rescale=2.0)).train()
    assert model.backbone.training and model.backbone.rope_embed.training
    model.decode_head.set_iteration(25)  # block 0 half annealed
    data = model.data_preprocessor(training_batch(2, 64), True)
    torch.manual_seed(0)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    for name in ('backbone.blocks.0.attn.qkv.weight',
                 'backbone.patch_embed.proj.weight', 'backbone.storage_tokens',
                 'decode_head.query_embed.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    wrapper = build_optim_wrapper(model, model.cfg.optim_wrapper)
    lrs = {group['lr'] for group in wrapper.optimizer.param_groups}
    assert lrs == {2e-4}


def test_two_stage_warm_up_holds_the_whole_dinov3_backbone():
    """EoMT's DINOv3 schedule shortened (head warm-up 2, backbone 3 after
    it, poly 0.9 to 0 at 20): every DINOv3 parameter (storage tokens, RoPE
    free blocks, final norm) stays at 0 through the head's warm-up, then
    warms up; all end the warm-ups at 2e-4 (llrd 1.0)."""
    model = build_tiny()
    wrapper = build_optim_wrapper(model, model.cfg.optim_wrapper)
    schedule = dict(
        model.cfg.param_scheduler[0],
        warmup_iters=2,
        backbone_warmup_iters=3,
        end=20)
    scheduler = PARAM_SCHEDULERS.build(dict(schedule, optimizer=wrapper))
    groups = {g['name']: g for g in wrapper.optimizer.param_groups}
    backbone = [g for n, g in groups.items() if n.startswith('backbone.')]
    assert 'backbone.storage_tokens' in groups
    assert 'backbone.norm.weight' in groups
    head = groups['decode_head.query_embed.weight']
    for step in range(6):
        lrs = {g['lr'] for g in backbone}
        if step <= 2:
            assert lrs == {0.0}, step
        else:
            assert max(lrs) == pytest.approx(2e-4 * (step - 2) / 3), step
            assert min(lrs) == pytest.approx(max(lrs)), step
        expected = 2e-4 * (
            step / 2 if step < 2 else (1 - (step - 2) / 18)**0.9)
        assert head['lr'] == pytest.approx(expected), step
        wrapper.optimizer.step()
        scheduler.step()


@pytest.mark.parametrize('name', CONFIGS)
def test_config_follows_eomts_dinov3_recipe_and_builds(name):
    """Every size and dataset: EoMT's DINOv3 ADE20K 512 values written out
    (lr 2e-4, llrd 1.0, warm-up 2000 + 3000, poly 0.9, 16 epochs ~ 20k
    iterations, 100 queries, annealing steps, 512 crops, RoPE rescale 2 in
    training); built on the meta device (no 6.7B random weights)."""
    ds, arch = name.split('/')[1].split('_')[:2]
    dim, depth, blocks = ARCHS[arch]
    cfg = load(name)
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == 2e-4
    assert optim.optimizer.weight_decay == 0.05
    assert optim.paramwise_cfg.layer_decay_rate == 1.0
    assert optim.clip_grad.max_norm == 0.01
    (sched, ) = cfg.param_scheduler
    assert (sched.type, sched.warmup_iters, sched.backbone_warmup_iters,
            sched.power, sched.end) == ('TwoStageWarmupPolyLR', 2000, 3000,
                                        0.9, 20000)
    assert cfg.train_cfg.max_iters == 20000
    head = cfg.model.decode_head
    assert (head.num_queries, head.num_blocks, head.num_classes,
            head.embed_dims) == (100, blocks, CLASSES[ds], dim)
    assert head.no_object_weight == 0.1 and head.num_upscale is None
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.frozen,
            backbone.drop_path_rate) == ('DinoV3VisionTransformer', arch,
                                         False, 0.0)
    assert backbone.rope_train_augment == dict(rescale=2.0)
    assert backbone.init_cfg.checkpoint.startswith(
        f'checkpoints/dinov3_{arch}_pretrain_lvd1689m')
    assert cfg.crop_size == (512, 512)
    assert cfg.model.data_preprocessor.size == (512, 512)
    crop = [t for t in cfg.train_pipeline if t.type == 'RandomCrop']
    assert crop[0].crop_size == (512, 512)
    assert {'type': 'EoMTMaskAnnealingHook'} in cfg.custom_hooks
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert len(model.backbone.blocks) == depth
    assert model.backbone.num_prefix_tokens == 5
    assert model.backbone.patch_size == 16
    assert len(model.decode_head.upscale) == 2
    assert model.decode_head.query_embed.weight.shape == (100, dim)
    # The annealing boundaries the run resolves, whatever form the config
    # gives them in.
    assert model.decode_head.annealing_iterations(
        cfg.train_cfg.max_iters) == ANNEALING[blocks]
    assert model.decode_head.mask_annealing['power'] == 0.9
    assert set(
        head.mask_annealing) == {'start_fractions', 'end_fractions', 'power'}


@pytest.mark.parametrize('name', [
    'dinov3/ade20k_vits16_eomt', 'dinov3/voc2012_vitl16_eomt',
    'dinov3/ade20k_vit7b16_eomt'
])
def test_annealing_follows_a_forked_run_length(name):
    """A config forked with twice the iterations anneals at twice the
    steps (the configs give fractions of the run), and the shapes demo's
    80-iteration schedule keeps 13-27 and 53-67."""
    cfg = load(name)
    cfg.merge_from_dict({'train_cfg.max_iters': 40000})
    with torch.device('meta'):
        head = MODELS.build(cfg.model).decode_head
    starts, ends = ANNEALING[head.num_blocks]
    assert head.annealing_iterations(cfg.train_cfg.max_iters) == ([
        2 * s for s in starts
    ], [2 * e for e in ends])
    with torch.device('meta'):
        demo = MODELS.build(load('dinov3/demo_shapes_eomt').model)
    assert demo.decode_head.annealing_iterations(80) == ([13, 53], [27, 67])


@pytest.mark.slow
def test_shapes_demo_learns(tmp_path):
    """configs/dinov3/demo_shapes_eomt.py (a 6-block DINOv3 ViT from
    scratch, 80 iterations; 94.5 mIoU when measured, about 5 minutes on 2
    busy cores), with loaders in the main process: tools/train.py, then
    tools/test.py on the checkpoint. Chance is about 9 mIoU."""
    from dinov2_seg.datasets import generate_shapes_dataset
    data = tmp_path / 'shapes'
    generate_shapes_dataset(str(data))
    options = [f'data_root={data}']
    for loader in ('train', 'val', 'test'):
        options += [
            f'{loader}_dataloader.dataset.data_root={data}',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False'
        ]
    config, work = 'configs/dinov3/demo_shapes_eomt.py', tmp_path / 'work'
    log = check(
        run('tools/train.py', config, '--work-dir', work, '--verbose',
            '--cfg-options', *options, 'train_cfg.val_interval=1000'))
    assert 'Iter(train) [80/80]' in log
    log = check(
        run('tools/test.py', config, work / 'iter_80.pth', '--work-dir', work,
            '--cfg-options', *options))
    assert reported_miou(log) > 80, log[-3000:]
