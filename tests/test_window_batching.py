"""How many windows go through the backbone at once, the two ways of
adding a window into the image (GPU: one product; CPU: row blocks), and
the lifetime of the merge matrices."""
import gc
import weakref

import pytest
import torch
from helpers.tools import REPO, write_config
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.models.segmentors.batched_encoder_decoder import \
    resolve_window_batch_size
from dinov2_seg.models.segmentors.window_merge import add_window, axis_bands


def test_window_batch_size_defaults_per_device():
    assert resolve_window_batch_size(None, 'cuda') == 8
    assert resolve_window_batch_size(None, 'cpu') == 1
    assert resolve_window_batch_size(3, 'cuda') == 3
    with pytest.raises(ValueError, match='window_batch_size must be >= 1'):
        resolve_window_batch_size(0, 'cuda')


def test_official_vitg_m2f_runs_one_896_window_per_call_on_a_gpu():
    """docs/vit_adapter.md: one 896 window of Meta's ViT-g Mask2Former
    peaks at 8.64 GiB in fp32, so its config must not take the GPU default
    of 8."""
    cfg = Config.fromfile(
        str(REPO / 'configs' / 'ade20k_vitg14_m2f_official.py'))
    assert tuple(cfg.model.test_cfg.crop_size) == (896, 896)
    assert resolve_window_batch_size(
        cfg.model.test_cfg.get('window_batch_size'), 'cuda') == 1


@pytest.mark.parametrize('blockwise', [False, True])
def test_both_ways_of_adding_a_window_equal_the_dense_product(blockwise):
    """out[band] += R @ x @ C^T with the band matrices written out dense:
    the GPU's single product (blockwise=False) and the CPU's row blocks."""
    torch.manual_seed(0)
    # 3 windows of 50 over a 120-row canvas padded 4 + 6 at the ends,
    # flipped, resized to 301 rows; one window of 90 columns to 45.
    spans = ((0, 50), (35, 85), (70, 120))
    rows = axis_bands(spans, 8, 120, (4, 6), True, 301, False,
                      torch.device('cpu'))
    cols = axis_bands(((0, 90), ), 7, 90, (0, 0), False, 45, False,
                      torch.device('cpu'))
    out = torch.zeros(5, 301, 45)
    expected = torch.zeros(5, 301, 45, dtype=torch.float64)
    for band in rows:
        x = torch.randn(5, 8, 7)
        add_window(out, x, band, cols[0], blockwise=blockwise)
        dense_rows = torch.zeros(301, 8, dtype=torch.float64)
        dense_rows[band.start:band.stop] = band.matrix.double()
        dense_cols = torch.zeros(45, 7, dtype=torch.float64)
        dense_cols[cols[0].start:cols[0].stop] = cols[0].matrix.double()
        expected += dense_rows @ x.double() @ dense_cols.T
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_merge_matrices_go_with_their_model(tmp_path):
    """The band matrices (device tensors on a GPU) are cached per model: a
    deleted model leaves none behind."""
    model = MODELS.build(
        Config.fromfile(write_config(tmp_path / 'tiny.py', tmp_path)).model)
    model.eval()
    with torch.no_grad():
        model.predict(torch.randn(1, 3, 60, 80))
    bands = model.axis_bands.cache_info()
    assert bands.currsize == 2  # rows and columns of the one view
    matrix = model.axis_bands(((0, 60), ), 5, 60, (0, 0), False, 60, False,
                              torch.device('cpu'))[0].matrix
    alive = weakref.ref(matrix)
    del model, matrix
    gc.collect()
    assert alive() is None
