"""Released DINOv2 files (Meta's, and EoMT's ADE20K model): where they are
and which config uses them; and Meta's DINOv3 backbone files, which are
gated: listed so that users know their names, never downloaded."""
from typing import Dict, NamedTuple, Optional

BASE_URL = 'https://dl.fbaipublicfiles.com/dinov2'
ARCHS = ('vits14', 'vitb14', 'vitl14', 'vitg14')
# DINOv2 paper, ADE20K mIoU with a frozen backbone (linear / ms with TTA).
PUBLISHED_ADE20K = {
    'vits14': (44.3, 47.2),
    'vitb14': (47.3, 51.3),
    'vitl14': (47.7, 53.1),
    'vitg14': (49.0, 53.0),
}


class OfficialFile(NamedTuple):
    url: str
    config: Optional[str]  # the config that uses it, if any yet
    published_miou: Optional[float]


def _catalog() -> Dict[str, OfficialFile]:
    files = {}
    for arch in ARCHS:
        folder = f'{BASE_URL}/dinov2_{arch}'
        for suffix in ('', '_reg4'):
            name = f'dinov2_{arch}{suffix}_pretrain.pth'
            files[name] = OfficialFile(
                f'{folder}/{name}',
                f'configs/_base_/models/dinov2_{arch}{suffix}.py', None)
        for dataset in ('ade20k', 'voc2012'):
            for index, recipe in enumerate(('linear', 'ms')):
                name = f'dinov2_{arch}_{dataset}_{recipe}_head.pth'
                miou = PUBLISHED_ADE20K[arch][index] \
                    if dataset == 'ade20k' else None
                files[name] = OfficialFile(
                    f'{folder}/{name}',
                    f'configs/{dataset}_{arch}_{recipe}.py', miou)
    m2f = 'configs/ade20k_vitg14_m2f_official.py'
    files['dinov2_vitg14_ade20k_m2f.pth'] = OfficialFile(
        f'{BASE_URL}/dinov2_vitg14/dinov2_vitg14_ade20k_m2f.pth', m2f, 60.2)
    # Meta's mmseg 0.x config of that model: not loaded, but
    # tools/check_official_m2f_config.py compares it with ours.
    files['dinov2_vitg14_ade20k_m2f_config.py'] = OfficialFile(
        f'{BASE_URL}/dinov2_vitg14/dinov2_vitg14_ade20k_m2f_config.py', m2f,
        None)
    # EoMT's released ADE20K semantic model (tue-mps/eomt model zoo), under
    # a name of its own (the Hub names every file pytorch_model.bin).
    files['ade20k_semantic_eomt_large_512.bin'] = OfficialFile(
        'https://huggingface.co/tue-mps/ade20k_semantic_eomt_large_512/'
        'resolve/main/pytorch_model.bin',
        'configs/ade20k_vitl14_eomt_official.py', 58.4)
    return files


OFFICIAL_FILES = _catalog()

# Meta's DINOv3 files are gated: whoever accepts the DINOv3 License on this
# page gets an e-mail with (expiring) URLs. Nothing here downloads them.
DINOV3_ACCESS_URL = ('https://ai.meta.com/resources/models-and-libraries/'
                     'dinov3-downloads/')
DINOV3_LICENSE = 'DINOv3 License'


class GatedFile(NamedTuple):
    arch: str  # the DinoV3VisionTransformer preset the file fits
    access_url: str  # where to request it
    licence: str
    config: Optional[str] = None  # the config that uses it, if any yet


def _dinov3_catalog() -> Dict[str, GatedFile]:
    # dinov3/hub/backbones.py: dinov3_{arch}_pretrain_{weights}-{hash}.pth
    files = {
        ('vits16', 'lvd1689m', '08c60483'):
        'vits16',
        ('vits16plus', 'lvd1689m', '4057cbaa'):
        'vits16plus',
        ('vitb16', 'lvd1689m', '73cec8be'):
        'vitb16',
        ('vitl16', 'lvd1689m', '8aa4cbdd'):
        'vitl16',
        # The satellite ViT-L holds the local-crop class norm.
        ('vitl16', 'sat493m', 'eadcf0ff'):
        'vitl16_sat493m',
        ('vitl16plus', 'lvd1689m', '46503df0'):
        'vitl16plus',
        ('vith16plus', 'lvd1689m', '7c1da9a5'):
        'vith16plus',
        ('vit7b16', 'lvd1689m', 'a955f4ea'):
        'vit7b16',
        ('vit7b16', 'sat493m', 'a6675841'):
        'vit7b16',
    }
    # The lvd1689m files are the ones the configs' backbones name.
    return {
        f'dinov3_{name}_pretrain_{weights}-{digest}.pth':
        GatedFile(
            arch, DINOV3_ACCESS_URL, DINOV3_LICENSE,
            f'configs/_base_/models/dinov3_{name}.py'
            if weights == 'lvd1689m' else None)
        for (name, weights, digest), arch in files.items()
    }


GATED_FILES = _dinov3_catalog()
# Meta's DINOv3 head files (dinov3/hub/segmentors.py:
# {backbone}_{dataset}_m2f_head-{hash}.pth), gated like the backbones; the
# ViT they need comes from the backbone file of the same arch.
GATED_HEAD_FILES = {
    'dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth':
    GatedFile('vit7b16', DINOV3_ACCESS_URL, DINOV3_LICENSE,
              'configs/dinov3/ade20k_vit7b16_m2f_official.py'),
}


def gated_message(name: str) -> str:
    """How to obtain a gated file, for tools that are asked to fetch it."""
    entry = GATED_FILES.get(name) or GATED_HEAD_FILES[name]
    if name in GATED_HEAD_FILES:
        use = (f'pass it to tools/test.py with {entry.config} (the ViT '
               f"comes from the {entry.arch} backbone file in its "
               'model.backbone.init_cfg)')
    else:
        use = ('point model.backbone.init_cfg at it '
               f"(arch='{entry.arch}')")
    return (f'{name} is gated: Meta distributes it under the '
            f'{entry.licence} to those who request access at '
            f'{entry.access_url} (an e-mail then gives its URL). Download it '
            f'yourself into checkpoints/ and {use}; this tool does not '
            'download it.')
