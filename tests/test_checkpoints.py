import os
import pickle

import numpy as np
import pytest
import torch
from helpers.fabricate import fabricate_official_file
from mmengine.logging import HistoryBuffer

from dinov2_seg.checkpoints import (describe_arch, extract_state_dict,
                                    load_backbone_checkpoint)
from dinov2_seg.models.backbones import ARCH_SETTINGS, DinoVisionTransformer


def small(arch, depth=2):
    return DinoVisionTransformer(arch=dict(ARCH_SETTINGS[arch], depth=depth))


def test_wrong_size_file_names_both_shapes(tmp_path):
    path = tmp_path / 'dinov2_vitb14_pretrain.pth'
    fabricate_official_file('vitb14', path, depth=2)
    with pytest.raises(ValueError) as err:
        load_backbone_checkpoint(small('vits14'), str(path))
    message = str(err.value)
    assert str(path) in message
    assert 'cls_token: file has (1, 1, 768), ' in message
    assert 'expects (1, 1, 384)' in message
    assert 'embed_dim=768' in message  # what the file looks like


def test_register_file_into_plain_arch_is_named(tmp_path):
    path = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    fabricate_official_file('vits14_reg4', path)
    model = DinoVisionTransformer(arch='vits14')
    with pytest.raises(ValueError) as err:
        load_backbone_checkpoint(model, str(path))
    message = str(err.value)
    assert "DinoVisionTransformer(arch='vits14')" in message
    assert "The weights look like arch 'vits14_reg4'." in message
    assert 'Unexpected keys (1): register_tokens' in message


def test_module_and_file_report_a_mismatch_alike(tmp_path):
    """A model in memory and a file of the same weights go through the same
    load: the same message, but for the name of the source."""
    from dinov2_seg.checkpoints.from_module import load_backbone_from_module
    path = tmp_path / 'dinov2_vits14_reg4_pretrain.pth'
    fabricate_official_file('vits14_reg4', path, depth=2)
    module = small('vits14_reg4')
    module.load_state_dict(torch.load(path))
    messages = []
    for load, source, name in ((load_backbone_checkpoint, str(path), 'F'),
                               (load_backbone_from_module, module, 'M')):
        with pytest.raises(ValueError) as err:
            load(small('vits14'), source)
        messages.append(str(err.value))
    from_file, from_module = messages
    module_name = ('the dinov2_seg.models.backbones.dinov2.'
                   'DinoVisionTransformer module')
    assert from_file.startswith(f'Checkpoint {path} does not fit')
    assert from_module.startswith(f'Checkpoint {module_name} does not fit')
    assert from_file.replace(str(path),
                             'X') == from_module.replace(module_name, 'X')
    assert ('The weights look like arch '
            "'embed_dim=384, depth=2, num_register_tokens=4'.") in from_module


def test_truncated_file_lists_missing_keys(tmp_path):
    path = tmp_path / 'partial.pth'
    state = fabricate_official_file('vits14', path, depth=2)
    del state['norm.weight']
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'Missing keys \(1\): norm.weight'):
        load_backbone_checkpoint(small('vits14'), str(path))


def test_loading_uses_every_tensor(tmp_path):
    path = tmp_path / 'ok.pth'
    state = fabricate_official_file('vits14', path, depth=2)
    model = small('vits14')
    load_backbone_checkpoint(model, str(path))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)


def test_wrapped_and_segmentor_checkpoints_are_accepted():
    tensor = torch.zeros(1)
    assert extract_state_dict({'state_dict': {
        'a': tensor
    }}, 'f') == {
        'a': tensor
    }
    assert extract_state_dict({'model': {'a': tensor}}, 'f') == {'a': tensor}
    segmentor = {'backbone.cls_token': tensor, 'decode_head.bn.weight': tensor}
    assert extract_state_dict(segmentor, 'f') == {'cls_token': tensor}
    with pytest.raises(ValueError, match='f holds no tensors'):
        extract_state_dict({'meta': {}}, 'f')


def test_describe_arch():
    with torch.device('meta'):
        state = DinoVisionTransformer(arch='vitl14_reg4').state_dict()
    assert describe_arch(state) == 'vitl14_reg4'
    assert describe_arch({'foo': torch.zeros(1)}) is None


def test_pretrained_init_cfg_is_strict(tmp_path):
    path = tmp_path / 'dinov2_vitb14_pretrain.pth'
    fabricate_official_file('vitb14', path, depth=2)
    model = DinoVisionTransformer(
        arch=dict(ARCH_SETTINGS['vits14'], depth=2),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='file has'):
        model.init_weights()


# mmengine checkpoints under torch>=2.6 (weights_only=True by default) ------
def test_mmengine_style_checkpoint_loads_with_weights_only(tmp_path):
    buffer = HistoryBuffer()
    for value in (0.5, 0.25):
        buffer.update(value)
    checkpoint = {
        'meta': {
            'iter': 7,
            'seed': np.int64(3),
            'lr': np.float64(1e-3),
            'dataset_meta': {
                'classes': ('a', 'b'),
                'palette': [[0, 0, 0], [1, 1, 1]]
            }
        },
        'message_hub': {
            'log_scalars': {
                'train/loss': buffer
            },
            'runtime_info': {
                'iter': 7
            }
        },
        'state_dict': {
            'w': torch.ones(2)
        },
    }
    path = tmp_path / 'iter_7.pth'
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['iter'] == 7
    assert loaded['meta']['lr'] == pytest.approx(1e-3)
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 0.375


class _Exploit:

    def __reduce__(self):
        return (os.getcwd, ())


def test_arbitrary_pickles_stay_rejected(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    # getattr is only honoured for HistoryBuffer's statistics methods.
    torch.save({'x': getattr(np.ndarray, 'tofile')}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
