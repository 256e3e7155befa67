"""Shared pieces of the EoMT tests: tiny models from the EoMT configs,
random images and batches, and a prediction through ``test_step``."""
import torch
from helpers.archs import TINY_ARCH
from helpers.eomt_reference import to_eomt_names
from helpers.tools import REPO
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

EMBED = {'vits14': 384, 'vitb14': 768, 'vitl14': 1024, 'vitg14': 1536}
# EoMT: 3 blocks with queries for ViT-S/B, 4 for ViT-L, 5 for ViT-g.
BLOCKS = {'vits14': 3, 'vitb14': 3, 'vitl14': 4, 'vitg14': 5}
CLASSES = {'ade20k': 150, 'voc2012': 21}
EOMT_CONFIGS = [f'{ds}_{arch}_eomt' for ds in CLASSES for arch in EMBED]
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
# A fabricated EoMT file (fabricate_eomt_state) at tiny sizes.
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


def load(name: str) -> Config:
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def build_tiny(name: str = 'ade20k_vits14_eomt',
               arch: dict = TINY_REG,
               **head) -> torch.nn.Module:
    """A config's model with the tiny ViT (``arch``), 6 queries in its last
    2 blocks (annealed over iterations 10-30 and 20-40) and 70-pixel
    windows at stride 50."""
    cfg = load(name)
    if isinstance(head.get('mask_annealing'), dict):
        # Replaces the config's schedule instead of merging into it.
        head['mask_annealing'] = dict(head['mask_annealing'], _delete_=True)
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
                            _delete_=True,
                            start_iters=[10, 20],
                            end_iters=[30, 40]),
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


def build_official_tiny(num_classes: int = 150, **test_cfg):
    """configs/ade20k_vitl14_eomt_official.py at the tiny file's sizes:
    patch 16, a 4 x 4 position grid (64 pixels), 64-pixel windows."""
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
                    mask_annealing=dict(
                        _delete_=True, start_iters=[1, 2], end_iters=[2, 3])),
                test_cfg=dict(
                    dict(crop_size=(64, 64), stride=(48, 48)), **test_cfg))))
    model = MODELS.build(cfg.model).eval()
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


def predict(model, image, fast: bool = True, ori_shape=None):
    """``test_step`` on one (3, H, W) uint8 image; ``ori_shape`` (default:
    the image's) is the size the logits are resized to."""
    model.test_cfg.fast_inference = fast
    sample = SegDataSample(
        metainfo=dict(
            img_shape=image.shape[-2:],
            ori_shape=ori_shape or image.shape[-2:]))
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0]
