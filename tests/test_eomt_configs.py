"""The EoMT configs of every size against EoMT's recipe (tue-mps/eomt:
training/mask_classification_semantic.py defaults, main.py trainer
settings, configs/dinov2/*/eomt_*.yaml), and the head's checks of its
settings."""
import pytest
import torch
from helpers.eomt import BLOCKS, CLASSES, EMBED, EOMT_CONFIGS, build_tiny, load
from helpers.fabricate import official_manifest
from helpers.tools import REPO
from mmseg.registry import MODELS

# EoMT's mask-annealing steps in its configs (attn_mask_annealing_start /
# end_steps), by blocks with queries, and the run length T whose T/6 is the
# first start: ViT-L ADE20K 512 semantic (eomt_large_512.yaml, 4 blocks),
# ViT-S and ViT-B COCO panoptic 640 (eomt_small_640.yaml,
# eomt_base_640.yaml, 3 blocks), ViT-g COCO panoptic 640
# (eomt_giant_640.yaml, 5 blocks).
EOMT_ANNEALING = {
    4: (39120, [6520, 13040, 19560, 26080], [13040, 19560, 26080, 32600]),
    3: (88692, [14782, 36955, 59128], [29564, 51737, 73910]),
    5: (88692, [14782, 25869, 36955, 48042,
                59128], [29564, 40651, 51737, 62824, 73910]),
}


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
    # EoMT fine-tunes the whole ViT with timm's default drop_path 0.
    assert (backbone.arch, backbone.frozen, backbone.with_cp,
            backbone.drop_path_rate) == (f'{arch}_reg4', False,
                                         arch == 'vitg14', 0.0)
    assert backbone.init_cfg.checkpoint == (
        f'checkpoints/dinov2_{arch}_reg4_pretrain.pth')
    head = model.decode_head
    # num_q 100 (eomt_large_512.yaml); blocks with queries: 3 in
    # eomt_small/base_640.yaml, 4 in eomt_large_512.yaml, 5 in
    # eomt_giant_640.yaml (num_blocks).
    assert (head.type, head.num_classes, head.embed_dims, head.num_queries,
            head.num_blocks, head.num_upscale) == ('EoMTHead', CLASSES[ds],
                                                   EMBED[arch], 100,
                                                   BLOCKS[arch], 2)
    # The schedule, resolved at EoMT's run length, gives its configs' steps.
    total, starts, ends = EOMT_ANNEALING[BLOCKS[arch]]
    with torch.device('meta'):
        segmentor = MODELS.build(model)
    assert segmentor.decode_head.annealing_iterations(total) == (starts, ends)
    assert head.mask_annealing.power == 0.9  # poly_power
    assert {'type': 'EoMTMaskAnnealingHook'} in cfg.custom_hooks
    # no_object_coefficient 0.1, class / mask / dice coefficients 2, 5, 5,
    # num_points 12544 (mask_classification_semantic.py defaults).
    assert (head.no_object_weight, head.loss_cls.loss_weight,
            head.loss_mask.loss_weight,
            head.loss_dice.loss_weight) == (0.1, 2.0, 5.0, 5.0)
    assert head.train_cfg.num_points == 12544

    # lr 1e-4, weight_decay 0.05, llrd 0.8, warmup_steps [500, 1000],
    # poly_power 0.9 (mask_classification_semantic.py defaults); AdamW
    # (lightning_module.py); gradient_clip_val 0.01 by norm (main.py).
    wrapper = cfg.optim_wrapper
    assert (wrapper.optimizer.type, wrapper.optimizer.lr,
            wrapper.optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert wrapper.constructor == 'DinoLayerDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg == dict(layer_decay_rate=0.8)
    schedule, = cfg.param_scheduler
    assert (schedule.type, schedule.warmup_iters,
            schedule.backbone_warmup_iters,
            schedule.power) == ('TwoStageWarmupPolyLR', 500, 1000, 0.9)

    # datasets/ade20k_semantic.py: img_size (512, 512), scale_range
    # (0.5, 2.0) of torchvision's ScaleJitter (datasets/transforms.py),
    # then RandomCrop(img_size), flip; colour jitter first (EoMT's, on the
    # whole image).
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == [
        'LoadImageFromFile', 'DinoLoadAnnotations', 'EoMTColorJitter',
        'RandomResize', 'RandomCrop', 'RandomFlip', 'PackSegInputs'
    ]
    assert (pipeline[3].scale, pipeline[3].ratio_range,
            pipeline[3].keep_ratio) == ((512, 512), (0.5, 2.0), True)
    assert pipeline[4] == dict(type='RandomCrop', crop_size=(512, 512))

    # The whole model on the meta device: Meta's backbone layout (so that
    # the backbone file loads via init_cfg) plus EoMT's head.
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
    # The demo is built and trained by the shapes run.
    assert found == set(EOMT_CONFIGS) | {'demo_shapes_eomt'}


def test_head_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match='one value per block'):
        build_tiny(mask_annealing=dict(start_iters=[1], end_iters=[2]))
    with pytest.raises(ValueError, match='either start_fractions'):
        build_tiny(
            mask_annealing=dict(
                start_fractions=[0.1, 0.2],
                end_fractions=[0.2, 0.3],
                end_iters=[2, 3]))
    with pytest.raises(ValueError, match=r'lie in \[0, 1\].*0.5 -> 1.5'):
        build_tiny(
            mask_annealing=dict(
                start_fractions=[0.1, 0.5], end_fractions=[0.2, 1.5]))
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


def test_head_without_losses_names_the_shared_base():
    with pytest.raises(ValueError, match='mask2former_losses.py'):
        MODELS.build(
            dict(
                type='EoMTHead',
                num_classes=3,
                embed_dims=32,
                masked_attention=False,
                train_cfg=dict(num_points=16)))
