"""Released DINOv2 files (Meta's, and EoMT's ADE20K model): where they are
and which config uses them."""
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
