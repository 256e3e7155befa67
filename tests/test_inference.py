"""tools/inference.py and the Python API on Meta-layout files."""
import cv2
import numpy as np
import pytest
from PIL import Image

from helpers.tools import REPO, check, run
from helpers.fabricate import fabricate_head_file, fabricate_official_file


@pytest.fixture(scope='module')
def meta_files(tmp_path_factory):
    root = tmp_path_factory.mktemp('meta')
    fabricate_official_file('vits14', root / 'dinov2_vits14_pretrain.pth')
    fabricate_head_file(root / 'dinov2_vits14_voc2012_linear_head.pth', 384, 1,
                        21)
    return root


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(
        str(folder / 'a.jpg'),
        rng.integers(0, 255, (60, 85, 3), dtype=np.uint8))
    cv2.imwrite(
        str(folder / 'b.png'), rng.integers(0, 255, (50, 40),
                                            dtype=np.uint8))  # grey
    (folder / 'notes.txt').write_text('not an image')
    extra = tmp_path / 'extra'
    extra.mkdir()
    cv2.imwrite(
        str(extra / 'c.jpg'),
        rng.integers(0, 255, (33, 47, 3), dtype=np.uint8))
    (extra / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    return folder, extra


def test_inference_tool_writes_labels_overlays_and_summaries(
        tmp_path, meta_files, inputs):
    folder, extra = inputs
    out = tmp_path / 'out'
    result = run('tools/inference.py', folder, f'{extra}/*.jpg',
                 tmp_path / 'missing.jpg', '--config',
                 'configs/voc2012_vits14_linear.py', '--checkpoint',
                 meta_files / 'dinov2_vits14_voc2012_linear_head.pth',
                 '--backbone', meta_files / 'dinov2_vits14_pretrain.pth',
                 '--out-dir', out)
    log = check(result)
    for name, size in (('a', (60, 85)), ('b', (50, 40)), ('c', (33, 47))):
        label = Image.open(out / f'{name}.png')
        assert label.mode == 'P' and label.size == size[::-1]
        assert np.asarray(label).max() < 21
        # The palette is VOC's: class 1 (aeroplane) is (128, 0, 0).
        assert label.getpalette()[3:6] == [128, 0, 0]
        overlay = cv2.imread(str(out / f'{name}_overlay.jpg'))
        assert overlay.shape == (*size, 3)
    assert f'{folder}/a.jpg: ' in result.stdout
    assert '%' in result.stdout.split(f'{folder}/a.jpg: ')[1].splitlines()[0]
    assert f'skipped {extra}/broken.jpg: not a readable image' in log
    assert f'skipped {tmp_path}/missing.jpg: no such file' in log
    assert '3 segmented, 2 skipped' in log
    assert not (out / 'notes.png').exists()


def test_inference_tool_batches_give_the_same_labels(tmp_path, meta_files,
                                                    inputs):
    folder, extra = inputs
    outputs = []
    for batch, workers in (('1', '0'), ('3', '2')):
        out = tmp_path / f'out{batch}'
        log = check(
            run('tools/inference.py', folder, extra, '--config',
                'configs/voc2012_vits14_linear.py', '--checkpoint',
                meta_files / 'dinov2_vits14_voc2012_linear_head.pth',
                '--backbone', meta_files / 'dinov2_vits14_pretrain.pth',
                '--batch-size', batch, '--workers', workers, '--out-dir',
                out))
        assert '3 segmented, 1 skipped' in log  # broken.jpg, mid-batch
        outputs.append(out)
    for name in ('a', 'b', 'c'):
        first, second = (np.asarray(Image.open(out / f'{name}.png'))
                         for out in outputs)
        assert np.array_equal(first, second), name


def test_scales_need_an_ms_config(tmp_path, meta_files, inputs):
    result = run('tools/inference.py', inputs[0], '--config',
                 'configs/voc2012_vits14_linear.py', '--checkpoint',
                 meta_files / 'dinov2_vits14_voc2012_linear_head.pth',
                 '--backbone', meta_files / 'dinov2_vits14_pretrain.pth',
                 '--scales', '3', '--out-dir', tmp_path / 'out')
    assert result.returncode != 0
    assert 'no multi-scale flip test' in result.stderr


def test_python_api_matches_the_notebook_flow(meta_files):
    from dinov2_seg.apis.inference import (inference_segmentor, init_segmentor,
                                           render_segmentation)
    model = init_segmentor(
        str(REPO / 'configs' / 'voc2012_vits14_linear.py'),
        checkpoint=str(meta_files / 'dinov2_vits14_voc2012_linear_head.pth'),
        backbone=str(meta_files / 'dinov2_vits14_pretrain.pth'))
    image = np.random.default_rng(1).integers(
        0, 255, (40, 55, 3), dtype=np.uint8)
    labels = inference_segmentor(model, image)
    assert labels.shape == (40, 55) and labels.dtype == np.int64
    assert model.dataset_meta['classes'][15] == 'person'
    # VOC's colours: background black, aeroplane (1) (128, 0, 0), person
    # (15) (192, 128, 128), tvmonitor (20) (0, 64, 128).
    colours = render_segmentation(
        np.array([[0, 1], [15, 20]]), model.dataset_meta['palette'])
    assert colours.dtype == np.uint8
    assert colours.tolist() == [[[0, 0, 0], [128, 0, 0]],
                                [[192, 128, 128], [0, 64, 128]]]


def test_readme_lists_every_official_file():
    from dinov2_seg.checkpoints.catalog import OFFICIAL_FILES
    readme = (REPO / 'README.md').read_text()
    # + Meta's m2f file and config, EoMT's ADE20K model
    assert len(OFFICIAL_FILES) == 4 * (2 + 4) + 2 + 1
    for name, entry in OFFICIAL_FILES.items():
        assert f'[{name}]({entry.url})' in readme
        if entry.config:
            assert (REPO / entry.config).is_file(), entry.config


def test_download_tool_lists_and_refuses_unknown_names():
    listing = check(run('tools/download_checkpoints.py', '--list'))
    assert 'dinov2_vitg14_ade20k_m2f.pth' in listing
    result = run('tools/download_checkpoints.py', 'dinov2_vitx14*')
    assert result.returncode == 2
    assert "unknown file(s) ['dinov2_vitx14*']" in result.stderr


def test_download_tool_keeps_existing_files(tmp_path):
    kept = tmp_path / 'dinov2_vits14_pretrain.pth'
    kept.write_bytes(b'already here')
    output = check(
        run('tools/download_checkpoints.py', 'dinov2_vits14_pretrain.pth',
            '--dest', tmp_path))
    assert f'{kept} exists, kept' in output
    assert kept.read_bytes() == b'already here'


def test_downloads_leave_no_partial_file(tmp_path):
    """What the tool relies on torch.hub's download_url_to_file for: the
    file appears complete or not at all (file:// URLs, no network)."""
    from torch.hub import download_url_to_file
    source = tmp_path / 'source.pth'
    source.write_bytes(bytes(range(256)) * 1000)
    dest = tmp_path / 'dest'
    dest.mkdir()
    download_url_to_file(
        source.as_uri(), str(dest / 'copy.pth'), progress=False)
    assert (dest / 'copy.pth').read_bytes() == source.read_bytes()
    with pytest.raises(OSError):
        download_url_to_file(
            (tmp_path / 'gone.pth').as_uri(),
            str(dest / 'gone.pth'),
            progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ['copy.pth']
