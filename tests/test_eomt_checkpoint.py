"""EoMT's released checkpoint (a fabricated file in its layout): strict
loading into configs/ade20k_vitl14_eomt_official.py, its predictions
against the reference (helpers/eomt_reference.py), and the errors."""
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.eomt import TINY_FILE, build_official_tiny, images, load, predict
from helpers.eomt_reference import class_map, eomt_forward, normalise, slide
from helpers.fabricate import eomt_manifest, fabricate_eomt_state
from mmseg.registry import MODELS

from dinov2_seg.checkpoints import load_segmentor_checkpoint
from dinov2_seg.checkpoints.eomt import convert_eomt


def test_released_checkpoint_loads_strictly_and_predicts_as_eomt(tmp_path):
    state = fabricate_eomt_state(**TINY_FILE)
    path = tmp_path / 'ade20k_semantic_eomt_large_512.bin'
    torch.save(state, path)
    # mmseg's stride rule here; EoMT's own windows are checked in
    # test_eomt_inference.py.
    model = build_official_tiny(window_rule='stride')
    load_segmentor_checkpoint(model, str(path))
    loaded = model.state_dict()
    b = 'network.encoder.backbone.'
    assert torch.equal(loaded['backbone.register_tokens'],
                       state[b + 'reg_token'])
    assert torch.equal(loaded['backbone.pos_embed'][:, 1:],
                       state[b + 'pos_embed'])
    assert not loaded['backbone.pos_embed'][:, 0].any()
    assert torch.equal(loaded['decode_head.query_embed.weight'],
                       state['network.q.weight'])

    # A 64 x 100 image: windows at 0 and 36, mask logits upsampled to the
    # window before the sigmoid (EoMT's order).
    image = images(1, 64, 100, seed=7)[0]

    def window_map(window):
        masks, classes = eomt_forward(
            state, window, heads=TINY_ARCH['num_heads'], num_blocks=2)[-1]
        return class_map(masks, classes, window.shape[-2:])

    expected = slide(normalise(image), window_map, 64, 48)
    result = predict(model, image)
    torch.testing.assert_close(
        result.seg_logits.data, expected, atol=1e-4, rtol=1e-4)


def test_released_checkpoint_errors(tmp_path):
    state = fabricate_eomt_state(**TINY_FILE)
    path = tmp_path / 'eomt.bin'
    torch.save(dict(state, **{'network.extra.weight': torch.zeros(1)}), path)
    with pytest.raises(
            ValueError, match=r'Unexpected keys \(1\): '
            r'network\.extra\.weight'):
        load_segmentor_checkpoint(build_official_tiny(), str(path))
    torch.save(state, path)
    with pytest.raises(
            ValueError, match='predicts 150 classes, the config 21'):
        load_segmentor_checkpoint(build_official_tiny(21), str(path))
    state['network.encoder.pixel_mean'] = torch.full((1, 3, 1, 1), 0.5)
    torch.save(state, path)
    with pytest.raises(ValueError, match='pixel_mean.*ImageNet'):
        load_segmentor_checkpoint(build_official_tiny(), str(path))


def test_released_checkpoint_full_manifest_fits_the_official_config():
    """Every tensor of the released EoMT-L file (names and shapes from
    EoMT's modules) has its place in configs/ade20k_vitl14_eomt_official.py,
    none missing: checked on the meta device."""
    with torch.device('meta'):
        state = {
            name: torch.empty(shape)
            for name, shape in eomt_manifest().items()
        }
        model = MODELS.build(load('ade20k_vitl14_eomt_official').model)
    pixel_stats = {k: v for k, v in state.items() if 'pixel_' in k}
    assert len(pixel_stats) == 2
    for key in pixel_stats:  # values cannot be checked on meta tensors
        state.pop(key)
    converted = {k: tuple(v.shape) for k, v in convert_eomt(state).items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert converted == expected
    # 24 blocks of 14 tensors, 8 ViT tensors besides, 3 mask-MLP layers of
    # 2, 2 upscale blocks of 5, queries, class head (2) and the masking
    # probabilities.
    assert len(expected) == 24 * 14 + 8 + 3 * 2 + 2 * 5 + 4
