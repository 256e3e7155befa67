"""What importing the package needs: the light tools run without mmcv (nor
mmseg and mmdet, which import its compiled ops), and the checkpoint code
does not import the models."""
import subprocess
import sys

import pytest
from helpers.tools import REPO

from dinov2_seg.checkpoints.catalog import (GATED_FILES, GATED_HEAD_FILES,
                                            OFFICIAL_FILES)

# Every test starts a fresh interpreter.
pytestmark = pytest.mark.slow

# Run before the code under test, in a fresh interpreter: any import of
# mmcv, mmseg or mmdet fails as it would where they are not installed.
WITHOUT_MMCV = '''
import importlib.abc
import sys


class NoMMCV(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmseg', 'mmdet'):
            raise ModuleNotFoundError(f'No module named {name!r}')
        return None


sys.meta_path.insert(0, NoMMCV())
'''


def run_without_mmcv(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', WITHOUT_MMCV + code],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=300)


def test_the_models_do_need_mmcv():
    """The blocker works: what needs mmcv fails under it."""
    result = run_without_mmcv('import dinov2_seg.models')
    assert result.returncode != 0
    assert "No module named 'mm" in result.stderr


def test_download_tool_lists_without_mmcv():
    result = run_without_mmcv('''
import runpy
sys.argv = ['tools/download_checkpoints.py', '--list']
runpy.run_path('tools/download_checkpoints.py', run_name='__main__')
''')
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # + Meta's gated DINOv3 files (9 backbones, the 7B Mask2Former head),
    # listed but never downloaded
    assert len(OFFICIAL_FILES) == 27 and len(GATED_FILES) == 9
    assert len(GATED_HEAD_FILES) == 1
    assert len(lines) == len(OFFICIAL_FILES) + len(GATED_FILES) + 1
    assert lines[0].split() == [
        'dinov2_vits14_pretrain.pth', 'configs/_base_/models/dinov2_vits14.py',
        'https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/'
        'dinov2_vits14_pretrain.pth'
    ]


def test_checkpoint_code_does_not_import_the_models():
    result = run_without_mmcv('''
import torch
from dinov2_seg.checkpoints import describe_arch
state = {'cls_token': torch.zeros(1, 1, 768),
         'register_tokens': torch.zeros(1, 4, 768)}
state.update({f'blocks.{i}.norm1.weight': torch.zeros(768)
              for i in range(12)})
print(describe_arch(state))
print(sorted(m for m in sys.modules if m.startswith('dinov2_seg.models')))
''')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ['vitb14_reg4', '[]']
