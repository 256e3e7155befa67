"""DINOv3 weights in timm's and Hugging Face's layouts load as Meta's files
do (timm's and transformers' own outputs: tests/test_dinov3_parity.py), and
Meta's gated files are listed but never downloaded."""
import copy
import re

import pytest
import torch
from helpers.dinov3_meta import RELEASED_FILES, fabricate_meta_state
from helpers.modules import require
from helpers.tools import REPO
from mmengine.config import Config

from dinov2_seg.checkpoints import catalog, load_backbone_state_dict
from dinov2_seg.checkpoints.foreign_dinov3 import (convert_timm_dinov3,
                                                   to_dinov3_layout)
from dinov2_seg.cli.download_checkpoints import main as download_main
from dinov2_seg.models.backbones import (DINOV3_ARCH_SETTINGS,
                                         DinoV3VisionTransformer)


def small(arch: str, depth: int = 2) -> dict:
    return dict(DINOV3_ARCH_SETTINGS[arch], depth=depth)


def timm_layout(meta: dict, qkv_bias: bool = True) -> dict:
    """What timm's ``vit_*_patch16_dinov3[_qkvb]`` state_dict holds for a
    Meta file (timm/models/eva.py: ``checkpoint_filter_fn`` drops the
    periods, bias masks, mask token and local class norm, splits the qkv
    bias into q/v and renames the rest)."""
    state = {}
    for key, value in meta.items():
        if key.endswith(('periods', 'bias_mask')) or key == 'mask_token' \
                or key.startswith('local_cls_norm'):
            continue
        if key.endswith('attn.qkv.bias'):
            if qkv_bias:
                q, _, v = value.chunk(3)
                state[key.replace('qkv.bias', 'q_bias')] = q
                state[key.replace('qkv.bias', 'v_bias')] = v
            continue
        for old, new in [('storage_tokens', 'reg_token'),
                         ('ls1.gamma', 'gamma_1'), ('ls2.gamma', 'gamma_2'),
                         ('mlp.w1.', 'mlp.fc1_g.'), ('mlp.w2.', 'mlp.fc1_x.'),
                         ('mlp.w3.', 'mlp.fc2.')]:
            key = key.replace(old, new)
        state[key] = value
    return state


def features(arch, state, x):
    model = DinoV3VisionTransformer(arch=arch)
    load_backbone_state_dict(model, state, 'test')
    with torch.no_grad():
        return model.intermediate_tokens(x)[0]


def x_70_100():
    return torch.randn(
        2, 3, 70, 100, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('arch', ['vits16', 'vits16plus'])
def test_timm_layout_gives_metas_features(arch):
    meta = fabricate_meta_state(arch, depth=2)
    x = x_70_100()
    want = features(small(arch), meta, x)
    got = features(small(arch), timm_layout(meta), x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_timm_model_without_qkv_bias_gets_a_zero_one():
    """timm's plain ``vit_*_dinov3`` (no ``_qkvb``) has no qkv bias; Meta's
    arch has a masked one, which must then be zero."""
    meta = fabricate_meta_state('vits16', depth=1)
    converted = convert_timm_dinov3(
        timm_layout(meta, qkv_bias=False), small('vits16', 1))
    assert torch.equal(converted['blocks.0.attn.qkv.bias'], torch.zeros(1152))
    assert torch.equal(converted['blocks.0.attn.qkv.bias_mask'],
                       meta['blocks.0.attn.qkv.bias_mask'])
    assert torch.equal(converted['rope_embed.periods'],
                       meta['rope_embed.periods'])
    assert converted.keys() == meta.keys()


def test_timm_7b_layout_keeps_no_qkv_bias():
    meta = fabricate_meta_state('vit7b16', device='meta')
    state = timm_layout(meta, qkv_bias=False)
    converted = to_dinov3_layout(state, DINOV3_ARCH_SETTINGS['vit7b16'])
    assert {
        k: v.shape
        for k, v in converted.items()
    } == {
        k: v.shape
        for k, v in meta.items()
    }


def test_meta_layout_passes_unchanged():
    meta = fabricate_meta_state('vits16plus', depth=1)
    converted = to_dinov3_layout(meta, small('vits16plus', 1))
    assert converted.keys() == meta.keys()
    assert all(converted[k] is meta[k] for k in meta)


def hf_model(arch: dict):
    transformers = require('transformers')
    hidden = arch['embed_dim'] * arch['ffn_ratio']
    if arch['ffn'] == 'swiglu':
        hidden = int(hidden * 2 / 3)
        hidden += -hidden % arch['swiglu_align']
    config = transformers.DINOv3ViTConfig(
        hidden_size=arch['embed_dim'],
        num_hidden_layers=arch['depth'],
        num_attention_heads=arch['num_heads'],
        intermediate_size=int(hidden),
        use_gated_mlp=arch['ffn'] == 'swiglu',
        hidden_act='silu' if arch['ffn'] == 'swiglu' else 'gelu',
        num_register_tokens=4,
        layerscale_value=1.0,
        layer_norm_eps=1e-5)
    model = transformers.DINOv3ViTModel(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make every tensor matter, norms and scales too
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


TINY_MLP = dict(
    DINOV3_ARCH_SETTINGS['vits16'], embed_dim=48, num_heads=4, depth=2)
TINY_SWIGLU = dict(
    DINOV3_ARCH_SETTINGS['vits16plus'], embed_dim=48, num_heads=4, depth=2)


@pytest.mark.parametrize(
    'arch', [TINY_MLP, TINY_SWIGLU], ids=['mlp', 'swiglu'])
def test_transformers_files_give_transformers_tokens(tmp_path, arch):
    hf = hf_model(arch)
    x = x_70_100()
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state
    hf.save_pretrained(tmp_path / 'hub')  # the Hub's layout (layer.N.)
    torch.save(hf.state_dict(), tmp_path / 'modules.pth')  # model.layer.N.
    for checkpoint in (tmp_path / 'hub' / 'model.safetensors',
                       tmp_path / 'modules.pth'):
        model = DinoV3VisionTransformer(
            arch=arch,
            init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
        model.init_weights()
        with torch.no_grad():
            got = model.intermediate_tokens(x)[0][-1]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_init_segmentor_accepts_a_transformers_model():
    from dinov2_seg.apis.inference import init_segmentor
    hf = hf_model(TINY_SWIGLU)
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_linear.py'))
    cfg.model.backbone = dict(
        type='DinoV3VisionTransformer', arch=TINY_SWIGLU, init_cfg=None)
    cfg.model.decode_head.in_channels = [48]
    cfg.model.decode_head.in_index = [1]  # 2 blocks, so 2 outputs
    cfg.model.decode_head.norm_cfg = dict(type='BN')
    model = init_segmentor(copy.deepcopy(cfg), backbone=hf)
    x = x_70_100()
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state[:, 5:]
        got = model.backbone(x)[-1]
        logits = model.decode_head.predict(
            model.backbone(x), [dict(img_shape=(70, 100))], model.test_cfg)
    torch.testing.assert_close(
        got,
        want.reshape(2, 4, 6, 48).permute(0, 3, 1, 2),
        atol=1e-4,
        rtol=1e-4)
    assert logits.shape == (2, 150, 70, 100)
    # A model of another kind is refused, naming its class and what differs.
    with pytest.raises(
            ValueError,
            match=r"(?s)DINOv3ViTModel module.*"
            r"closest 'vits16': embed_dim=48.*blocks.0.mlp.fc1"):
        init_segmentor(copy.deepcopy(cfg), backbone=hf_model(TINY_MLP))


def test_catalogue_lists_metas_gated_files():
    assert set(catalog.GATED_FILES) == set(RELEASED_FILES)
    for name, entry in catalog.GATED_FILES.items():
        assert entry.arch == RELEASED_FILES[name]
        assert entry.arch in DINOV3_ARCH_SETTINGS
        assert entry.licence == 'DINOv3 License'
        assert name not in catalog.OFFICIAL_FILES  # nothing to download
        assert re.fullmatch(
            r'dinov3_vit\w+_pretrain_(lvd1689m|sat493m)-[0-9a-f]{8}\.pth',
            name)
        # The config whose backbone names the file (none for satellite).
        if 'lvd1689m' in name:
            config = REPO / entry.config
            assert name in config.read_text(), (name, entry.config)
        else:
            assert entry.config is None


def test_download_tool_lists_gated_files_and_refuses_them(
        tmp_path, capsys, monkeypatch):

    def no_download(url, path):
        raise AssertionError(f'tried to download {url}')

    monkeypatch.setattr('dinov2_seg.cli.download_checkpoints.download_file',
                        no_download)
    assert download_main(['--list']) == 0
    listing = capsys.readouterr().out
    name = 'dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth'
    line = next(line for line in listing.splitlines() if name in line)
    assert 'gated (DINOv3 License)' in line
    assert catalog.DINOV3_ACCESS_URL in line
    head = 'dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth'
    line = next(line for line in listing.splitlines() if head in line)
    assert 'configs/dinov3/ade20k_vit7b16_m2f_official.py' in line
    assert 'gated (DINOv3 License)' in line
    assert download_main([head, '--dest', str(tmp_path / 'c')]) == 2
    assert 'vit7b16 backbone file' in capsys.readouterr().err
    assert not (tmp_path / 'c').exists()

    dest = tmp_path / 'checkpoints'
    assert download_main(['dinov3_vitl16*', '--dest', str(dest)]) == 2
    error = capsys.readouterr().err
    assert f'{name} is gated' in error
    assert catalog.DINOV3_ACCESS_URL in error
    assert "arch='vitl16_sat493m'" in error
    assert not dest.exists()


def test_a_dinov2_backbone_given_a_dinov3_file_says_so(tmp_path):
    from dinov2_seg.models.backbones import (ARCH_SETTINGS,
                                             DinoVisionTransformer)
    v2 = DinoVisionTransformer(arch=dict(ARCH_SETTINGS['vits14'], depth=1))
    with pytest.raises(ValueError) as error:
        load_backbone_state_dict(v2, fabricate_meta_state('vits16', depth=1),
                                 'dinov3_vits16.pth')
    assert "use model.backbone.type='DinoV3VisionTransformer'" in str(
        error.value)
    v3 = DinoV3VisionTransformer(arch=small('vits16', 1))
    with pytest.raises(ValueError) as error:
        load_backbone_state_dict(v3, v2.state_dict(), 'dinov2_vits14.pth')
    assert "use model.backbone.type='DinoVisionTransformer'" in str(
        error.value)
