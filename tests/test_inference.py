"""tools/inference.py and the Python API on Meta-layout files."""
import re

import cv2
import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.fabricate import fabricate_head_file, fabricate_official_file
from helpers.tools import REPO, check, run
from PIL import Image


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


@pytest.mark.slow
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


@pytest.mark.slow
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
                '--batch-size', batch, '--workers', workers, '--out-dir', out))
        assert '3 segmented, 1 skipped' in log  # broken.jpg, mid-batch
        outputs.append(out)
    for name in ('a', 'b', 'c'):
        first, second = (
            np.asarray(Image.open(out / f'{name}.png')) for out in outputs)
        assert np.array_equal(first, second), name


@pytest.mark.slow
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


def test_checkpoints_page_lists_every_official_file():
    from dinov2_seg.checkpoints.catalog import OFFICIAL_FILES
    readme = (REPO / 'docs' / 'checkpoints.md').read_text()
    # + Meta's m2f file and config, EoMT's ADE20K model
    assert len(OFFICIAL_FILES) == 4 * (2 + 4) + 2 + 1
    for name, entry in OFFICIAL_FILES.items():
        assert f'[{name}]({entry.url})' in readme
        if entry.config:
            assert (REPO / entry.config).is_file(), entry.config


@pytest.mark.slow
def test_download_tool_lists_and_refuses_unknown_names():
    listing = check(run('tools/download_checkpoints.py', '--list'))
    assert 'dinov2_vitg14_ade20k_m2f.pth' in listing
    result = run('tools/download_checkpoints.py', 'dinov2_vitx14*')
    assert result.returncode == 2
    assert "unknown file(s) ['dinov2_vitx14*']" in result.stderr


@pytest.mark.slow
def test_download_tool_keeps_existing_files(tmp_path):
    kept = tmp_path / 'dinov2_vits14_pretrain.pth'
    kept.write_bytes(b'already here')
    output = check(
        run('tools/download_checkpoints.py', 'dinov2_vits14_pretrain.pth',
            '--dest', tmp_path))
    assert f'{kept} exists, kept' in output
    assert kept.read_bytes() == b'already here'


# A user's fork of the VOC linear recipe with a tiny backbone, and a whole
# segmentor checkpoint of it (random weights): quick to run as a tool.
TINY_CONFIG = f"""
_base_ = [{str(REPO / 'configs' / 'voc2012_vits14_linear.py')!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r}), init_cfg=None),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}]))
"""


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    root = tmp_path_factory.mktemp('tiny')
    config = root / 'tiny.py'
    config.write_text(TINY_CONFIG)
    model = MODELS.build(Config.fromfile(str(config)).model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # varied labels from random weights
        for param in model.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    checkpoint = root / 'whole.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    return config, checkpoint


@pytest.fixture
def tree(tmp_path):
    """Three photos, two of them named a.jpg in different sub-folders."""
    rng = np.random.default_rng(3)
    files = [
        tmp_path / 'photos' / 'x' / 'a.jpg',
        tmp_path / 'photos' / 'y' / 'a.jpg', tmp_path / 'photos' / 'b.png'
    ]
    for path, size in zip(files, ((40, 50), (45, 30), (36, 36))):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), np.uint8))
    return tmp_path / 'photos', files


@pytest.mark.slow
def test_folder_tree_keeps_sub_folders_on_a_readable_console(
        tmp_path, tiny_model, tree):
    from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
    config, checkpoint = tiny_model
    folder, files = tree
    out = tmp_path / 'out'
    result = run('tools/inference.py', folder, '--config', config,
                 '--checkpoint', checkpoint, '--out-dir', out)
    console = check(result)
    # Each photo's results under its path below the folder, with the labels
    # of the same model run in this process: nothing overwritten.
    model = init_segmentor(str(config), str(checkpoint))
    names = ['x/a', 'y/a', 'b']
    for path, name in zip(files, names):
        written = np.asarray(Image.open(out / f'{name}.png'))
        assert np.array_equal(written, inference_segmentor(model, str(path)))
        assert (out / f'{name}_overlay.jpg').is_file()
        # One line per photo naming what was written.
        assert re.search(
            rf'^{re.escape(str(path))}: \w+ \d+\.\d%.* -> '
            rf'{re.escape(str(out / name))}\.png$', result.stdout, re.M)
    assert not np.array_equal(
        np.asarray(Image.open(out / 'x/a.png')),
        np.asarray(Image.open(out / 'y/a.png')))
    written = sorted(str(p.relative_to(out)) for p in out.rglob('*.*'))
    assert written == sorted([f'{n}.png' for n in names] +
                             [f'{n}_overlay.jpg' for n in names])
    assert f'3 segmented, 0 skipped -> {out} (6 files' in console
    # The libraries' log lines, warnings and mmcv's progress bar are gone:
    # the three results, the progress line and the summary remain.
    for noise in ('INFO', 'Warning', 'warnings.warn', 'task/s', '>>>'):
        assert noise not in console, noise
    assert re.search(r'segment .* 3/3 images', console)
    assert len(console.strip().splitlines()) == 5, console

    verbose = check(
        run('tools/inference.py', folder, '--config', config, '--checkpoint',
            checkpoint, '--out-dir', tmp_path / 'verbose', '--verbose'))
    assert f'INFO - Loads checkpoint by local backend from path: ' \
        f'{checkpoint}' in verbose
    assert 'UserWarning: ``build_loss`` would be deprecated' in verbose
    assert '3 segmented, 0 skipped' in verbose


def test_inputs_that_would_share_an_output_are_refused(tmp_path, tiny_model,
                                                       tree):
    from dinov2_seg.cli import inference as inference_cli
    config, checkpoint = tiny_model
    folder, (xa, ya, b) = tree
    other_b = folder / 'b.jpg'  # b.png's results would be b.png too
    cv2.imwrite(str(other_b), np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / 'out'
    with pytest.raises(ValueError) as error:
        inference_cli.main([
            str(xa),
            str(ya),
            str(folder), '--config',
            str(config), '--checkpoint',
            str(checkpoint), '--out-dir',
            str(out)
        ])
    message = str(error.value)
    assert message.startswith('2 output file(s) would be written by more '
                              'than one input')
    assert f'{xa} and {ya} -> {out}/a.png' in message
    assert f'{other_b} and {b} -> {out}/b.png' in message
    assert not out.exists()


def test_input_names_below_folders_and_globs(tmp_path, tree):
    from dinov2_seg.apis.image_files import expand_inputs
    folder, (xa, ya, b) = tree
    assert expand_inputs([str(folder)]) == [(str(b), 'b'), (str(xa), 'x/a'),
                                            (str(ya), 'y/a')]
    # A glob keeps the path below its fixed part; a file its name; a file
    # given twice is kept once.
    assert expand_inputs([f'{folder}/**/a.jpg',
                          str(xa), str(b)]) == [(str(xa), 'x/a'),
                                                (str(ya), 'y/a'),
                                                (str(b), 'b')]


def test_backbone_and_a_whole_checkpoint_are_refused(tmp_path, tiny_model):
    """Either would overwrite or ignore the other's backbone weights."""
    from dinov2_seg.apis.inference import init_segmentor
    from dinov2_seg.models.backbones import DinoVisionTransformer
    config, checkpoint = tiny_model
    module = DinoVisionTransformer(arch=TINY_ARCH)
    with pytest.raises(ValueError) as error:
        init_segmentor(str(config), str(checkpoint), backbone=module)
    assert str(error.value).startswith(
        f"init_segmentor got checkpoint='{checkpoint}', which holds a whole "
        'segmentor (backbone weights included), and backbone=<dinov2_seg.'
        'models.backbones.')
    assert "DinoVisionTransformer module>: its weights would be " \
        "overwritten by the checkpoint's. Pass the checkpoint alone" \
        in str(error.value)
    backbone_file = tmp_path / 'backbone.pth'
    torch.save(module.state_dict(), backbone_file)
    with pytest.raises(
            ValueError,
            match=r"backbone='.*backbone\.pth' "
            r'\(--backbone\): that file would be ignored'):
        init_segmentor(str(config), str(checkpoint), str(backbone_file))
    # Head-only files and checkpoints of frozen-backbone runs leave the
    # backbone to its file or module.
    head = tmp_path / 'head.pth'
    fabricate_head_file(head, 48, 1, 21)
    frozen = tmp_path / 'frozen.pth'
    torch.save(
        dict(state_dict={}, meta=dict(backbone_sha256='0' * 64)), frozen)
    from dinov2_seg.apis.inference import holds_backbone_weights
    assert holds_backbone_weights(str(checkpoint))
    assert not holds_backbone_weights(str(head))
    assert not holds_backbone_weights(str(frozen))
    model = init_segmentor(str(config), str(head), backbone=module)
    assert model.backbone.cls_token.data_ptr() != module.cls_token.data_ptr()
    assert torch.equal(model.backbone.cls_token, module.cls_token)


def test_project_pipelines_lose_their_label_loading_for_inference():
    """The configs load labels with DinoLoadAnnotations (mmseg's
    LoadAnnotations in a user's config): neither reaches an image without
    labels."""
    from mmengine.config import Config

    from dinov2_seg.datasets.pipelines import without_annotations
    cfg = Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_ms.py'))
    steps = without_annotations(cfg.test_pipeline)
    assert [s['type'] for s in steps] == [
        t['type'] for t in cfg.test_pipeline
        if t['type'] != 'DinoLoadAnnotations'
    ]
    assert len(steps) == len(cfg.test_pipeline) - 1
    stages = without_annotations(cfg.tta_pipeline)[1]['transforms']
    assert all(t['type'] != 'DinoLoadAnnotations' for s in stages for t in s)
    assert len(stages) == len(cfg.tta_pipeline[1]['transforms']) - 1
    mmseg_own = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    assert without_annotations(mmseg_own) == [dict(type='LoadImageFromFile')]
