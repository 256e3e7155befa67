"""Every way a checkpoint gets in reads it with ``weights_only=True``: a
pickle that carries code is refused before any of it runs, on every torch
the project accepts. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` gives torch's
pre-2.6 default (a plain ``torch.load`` unpickles anything), so these tests
also hold the project to that older behaviour."""
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.tools import write_config
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint
from mmseg.registry import MODELS

from dinov2_seg.apis.inference import init_segmentor
from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.frozen_backbone import check_backbone_file
from dinov2_seg.models.backbones import DinoVisionTransformer


class Payload:
    """Unpickled, it creates the folder ``path``: the trace of a checkpoint
    that ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path, )


@pytest.fixture
def old_torch_default(monkeypatch, tmp_path):
    """torch.load's default as before torch 2.6, and torch hub's cache in
    the test's folder (for URLs)."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield
    torch.hub.set_dir(hub_dir)


def tiny_segmentor(tmp_path, backbone_file=None):
    config = Config.fromfile(write_config(tmp_path / 'tiny.py', tmp_path))
    if backbone_file is not None:
        config.model.backbone.init_cfg = dict(
            type='Pretrained', checkpoint=str(backbone_file))
    return config, MODELS.build(config.model)


def poisoned(path, state):
    """``state`` with a code payload beside it, saved to ``path``."""
    marker = path.parent / f'{path.name}.ran'
    torch.save(dict(state, payload=Payload(marker)), path)
    return path, marker


def assert_refused(load, path, marker):
    with pytest.raises(pickle.UnpicklingError, match=str(path.name)):
        load()
    assert not marker.exists(), f'{path} ran its payload'


def test_the_payload_runs_under_a_plain_load(old_torch_default, tmp_path):
    """The fabricated file does carry code: torch.load without
    weights_only runs it under the old default."""
    path, marker = poisoned(tmp_path / 'evil.pth', {})
    torch.load(path)
    assert marker.exists()


def backbone_state():
    return DinoVisionTransformer(arch=TINY_ARCH).state_dict()


def test_backbone_file_of_init_cfg(old_torch_default, tmp_path):
    path, marker = poisoned(tmp_path / 'backbone.pth', backbone_state())
    backbone = DinoVisionTransformer(
        arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    assert_refused(backbone.init_weights, path, marker)


def test_backbone_url_of_init_cfg(old_torch_default, tmp_path):
    path, marker = poisoned(tmp_path / 'backbone.pth', backbone_state())
    backbone = DinoVisionTransformer(
        arch=TINY_ARCH,
        init_cfg=dict(type='Pretrained', checkpoint=path.as_uri()))
    assert_refused(backbone.init_weights, path, marker)


def test_head_file_and_whole_checkpoint(old_torch_default, tmp_path):
    backbone = tmp_path / 'backbone.pth'
    torch.save(backbone_state(), backbone)
    _, model = tiny_segmentor(tmp_path, backbone)
    head = {
        k: v
        for k, v in model.state_dict().items() if k.startswith('decode_head')
    }
    for name, state in (('head.pth', head), ('whole.pth', model.state_dict())):
        path, marker = poisoned(tmp_path / name, dict(state_dict=state))
        assert_refused(lambda: load_segmentor_checkpoint(model, str(path)),
                       path, marker)


def test_eomt_release_file(old_torch_default, tmp_path):
    """EoMT publishes a pytorch_model.bin (a torch pickle)."""
    _, model = tiny_segmentor(tmp_path)
    path, marker = poisoned(tmp_path / 'pytorch_model.bin', {})
    assert_refused(lambda: load_segmentor_checkpoint(model, str(path)), path,
                   marker)


def test_resume_and_load_from(old_torch_default, tmp_path):
    """The runner's --resume and load_from read through mmengine's
    _load_checkpoint."""
    path, marker = poisoned(tmp_path / 'iter_4.pth', dict(state_dict={}))
    assert_refused(lambda: _load_checkpoint(str(path)), path, marker)


def test_backbone_option_of_the_api_and_onnx_tool(old_torch_default, tmp_path):
    """``init_segmentor(config, backbone=FILE)``, which
    ``tools/export_onnx.py --backbone`` calls."""
    config, _ = tiny_segmentor(tmp_path)
    path, marker = poisoned(tmp_path / 'backbone.pth', backbone_state())
    assert_refused(lambda: init_segmentor(config, backbone=str(path)), path,
                   marker)


def test_mmengine_checkpoints_still_load(old_torch_default, tmp_path):
    """What mmengine writes (numpy values, HistoryBuffer statistics) stays
    readable with weights_only=True."""
    buffer = HistoryBuffer()
    buffer.update(0.5)
    state = dict(
        meta=dict(seed=np.int64(3), lr=np.array([1e-3])),
        message_hub=dict(log_scalars={'loss': buffer}),
        state_dict={'w': torch.ones(2)})
    torch.save(state, tmp_path / 'iter_1.pth')
    loaded = _load_checkpoint(str(tmp_path / 'iter_1.pth'))
    assert loaded['meta']['seed'] == 3
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


def test_frozen_backbone_from_a_url_not_downloaded_yet(old_torch_default,
                                                       tmp_path):
    """A head-only checkpoint whose backbone init_cfg is a URL: the file is
    fetched (as init_weights would) before its hash is compared."""
    source = tmp_path / 'mirror' / 'dinov2_tiny.pth'
    source.parent.mkdir()
    torch.save(backbone_state(), source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    _, model = tiny_segmentor(tmp_path, source.as_uri())
    meta = dict(backbone_file=source.as_uri(), backbone_sha256=digest)
    cached = tmp_path / 'hub' / 'checkpoints' / 'dinov2_tiny.pth'
    assert not cached.exists()
    check_backbone_file(meta, model, 'head_only.pth')
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    # Another file behind the same URL is refused by its hash.
    with pytest.raises(ValueError, match='a different file'):
        check_backbone_file(
            dict(meta, backbone_sha256='0' * 64), model, 'head_only.pth')
