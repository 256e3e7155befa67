"""Images of every mode go the same way through inference_segmentor,
tools/inference.py and the dataset pipelines (cv2's IMREAD_COLOR), or are
refused naming them; a file that cannot be decoded is one line naming it in
training, testing and inference, and a training run it stops keeps its
checkpoint and prints the resume command."""
import shutil

import cv2
import numpy as np
import pytest
import torch
from helpers.tools import write_config
from mmcv.transforms import Compose
from mmengine.config import Config
from mmseg.registry import MODELS
from torch._utils import ExceptionWrapper

from dinov2_seg.apis.image_files import read_image
from dinov2_seg.apis.inference import inference_segmentor, init_segmentor
from dinov2_seg.datasets.errors import UnreadableFileError, one_line_data_error
from dinov2_seg.datasets.image_modes import ImageModeError, as_bgr_uint8


def modes():
    """Arrays as cv2.imread(IMREAD_UNCHANGED) returns PNG files of each
    mode."""
    rng = np.random.default_rng(0)
    yield 'grey', rng.integers(0, 256, (9, 7), np.uint8)
    yield 'grey16', rng.integers(0, 65536, (9, 7), np.uint16)
    yield 'bgr16', rng.integers(0, 65536, (9, 7, 3), np.uint16)
    yield 'bgra', rng.integers(0, 256, (9, 7, 4), np.uint8)
    yield 'bgra16', rng.integers(0, 65536, (9, 7, 4), np.uint16)


@pytest.mark.parametrize('name, array', list(modes()))
def test_arrays_convert_as_cv2_reads_their_files(tmp_path, name, array):
    """The reference is cv2 itself: the file of the array, read with
    IMREAD_COLOR (the dataset pipelines' LoadImageFromFile and
    tools/inference.py's reader)."""
    path = tmp_path / f'{name}.png'
    cv2.imwrite(str(path), array)
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
                          array)  # as written
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert expected.dtype == np.uint8 and expected.shape == (9, 7, 3)
    assert np.array_equal(as_bgr_uint8(array), expected)
    assert np.array_equal(read_image(str(path)), expected)
    loaded = Compose([dict(type='LoadImageFromFile')])(
        dict(img_path=str(path)))
    assert np.array_equal(loaded['img'], expected)


def test_arrays_of_other_kinds_are_refused_by_name():
    with pytest.raises(ImageModeError) as err:
        as_bgr_uint8(np.zeros((4, 5, 3), np.float32), 'image array')
    assert str(err.value).startswith(
        'image array: a float32 array of shape (4, 5, 3); expected uint8 (or '
        'uint16) pixel values as cv2.imread returns them')
    with pytest.raises(
            ImageModeError,
            match=r'a uint8 array of shape '
            r'\(4, 5, 2\); expected \(H, W\) or'):
        as_bgr_uint8(np.zeros((4, 5, 2), np.uint8), 'image array')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory, shapes_root):
    root = tmp_path_factory.mktemp('tiny_inputs')
    config = write_config(root / 'tiny.py', shapes_root)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # varied labels from random weights
        for param in model.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    checkpoint = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return config, checkpoint


def test_inference_segmentor_takes_bgra_grey_and_16_bit(tmp_path, tiny):
    """An RGBA/BGRA array failed with 'size of tensor a (4) must match
    ... (3)'; each mode now segments as its file does."""
    config, checkpoint = tiny
    model = init_segmentor(str(config), str(checkpoint))
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (40, 52, 3), np.uint8)
    alpha = rng.integers(0, 256, (40, 52, 1), np.uint8)
    bgra = np.concatenate([bgr, alpha], axis=2)
    labels = inference_segmentor(model, bgr)
    assert len(np.unique(labels)) > 1
    assert np.array_equal(inference_segmentor(model, bgra), labels)
    path = tmp_path / 'bgra.png'
    cv2.imwrite(str(path), bgra)
    assert np.array_equal(inference_segmentor(model, str(path)), labels)
    wide = bgr.astype(np.uint16) * 256 + 7  # high byte: bgr
    assert np.array_equal(inference_segmentor(model, wide), labels)
    grey = bgr[..., 1]
    assert np.array_equal(
        inference_segmentor(model, grey),
        inference_segmentor(model, np.repeat(grey[..., None], 3, axis=2)))


def truncated_png(path, shape=(90, 125, 3)):
    data = cv2.imencode(
        '.png',
        np.random.default_rng(0).integers(0, 256, shape,
                                          np.uint8))[1].tobytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def test_truncated_file_to_inference_segmentor_names_it(tmp_path, tiny):
    config, checkpoint = tiny
    model = init_segmentor(str(config), str(checkpoint))
    path = truncated_png(tmp_path / 'cut.png')
    with pytest.raises(UnreadableFileError) as err:
        inference_segmentor(model, str(path))
    assert str(err.value) == (
        f'Cannot read the image {path} (not decodable: a truncated or '
        'corrupt file, or not an image)')


def test_errors_of_loader_workers_keep_their_one_line():
    """torch's DataLoader re-raises a worker's error with the worker's
    traceback in front of its message."""
    for raised in (UnreadableFileError('Cannot read the label map x.png'),
                   AssertionError('failed to load image: data/a b.jpg')):
        try:
            raise raised
        except Exception:  # noqa: B902
            wrapped = ExceptionWrapper(where='in DataLoader worker process 0')
        with pytest.raises(type(raised)) as err:
            wrapped.reraise()
        assert 'Traceback' in str(err.value)
        assert one_line_data_error(err.value) in (
            'Cannot read the label map x.png',
            'Cannot read the image data/a b.jpg (not decodable: a truncated '
            'or corrupt file, or not an image)')
    assert one_line_data_error(AssertionError('another check')) is None
    assert one_line_data_error(KeyError('failed to load image: x')) is None


def test_missing_image_is_named_only_where_the_loader_reads_it(tmp_path):
    """A FileNotFoundError raised by mmcv's image loader is one line naming
    the image, in process and from a DataLoader worker; one raised
    elsewhere (a missing checkpoint) is not a dataset error."""
    from mmcv.transforms import LoadImageFromFile
    missing = str(tmp_path / 'images' / 'gone.jpg')
    expected = (f'The image {missing} does not exist: the dataset lists it '
                '(check data_root, data_prefix and img_suffix)')
    with pytest.raises(FileNotFoundError) as err:
        LoadImageFromFile()(dict(img_path=missing))
    assert one_line_data_error(err.value) == expected
    try:
        LoadImageFromFile()(dict(img_path=missing))
    except FileNotFoundError:
        wrapped = ExceptionWrapper(where='in DataLoader worker process 0')
    with pytest.raises(FileNotFoundError) as err:
        wrapped.reraise()
    assert 'Traceback' in str(err.value)
    assert one_line_data_error(err.value) == expected
    with pytest.raises(FileNotFoundError) as err:
        open(tmp_path / 'iter_4.pth', 'rb')
    assert one_line_data_error(err.value) is None


@pytest.fixture
def bad_data(tmp_path, shapes_root):
    """The shapes data with a truncated val and a truncated train image
    (the 5th in order: read in the third training iteration of 2)."""
    data = tmp_path / 'shapes'
    shutil.copytree(shapes_root, data)
    val = data / 'images' / 'validation' / 'v0001.jpg'
    train = data / 'images' / 'training' / 't0004.jpg'
    for image in (val, train):
        truncated_png(image)
    return data, val, train


def test_truncated_image_stops_the_test_with_one_line(tmp_path, tiny, bad_data,
                                                      capsys):
    from dinov2_seg.cli import test as test_tool
    config, checkpoint = tiny
    data, val, _ = bad_data
    config = write_config(tmp_path / 'bad.py', data)
    argv = [str(config), str(checkpoint), '--work-dir', str(tmp_path / 'w')]
    with pytest.raises(SystemExit) as stop:
        test_tool.main(argv)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert f'Error: Cannot read the image {val} (not decodable: a ' \
        'truncated or corrupt file, or not an image)\n' in err
    with pytest.raises(AssertionError, match=f'failed to load image: {val}'):
        test_tool.main(argv + ['--verbose'])  # the whole traceback


def test_training_stopped_by_a_bad_file_keeps_its_checkpoint(
        tmp_path, bad_data, capsys):
    from dinov2_seg.cli import train as train_tool
    data, _, train = bad_data
    config = write_config(
        tmp_path / 'bad.py', data, """
train_dataloader = dict(loader, batch_size=2, sampler=dict(shuffle=False))
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=3))
train_cfg = dict(max_iters=3, val_interval=100, val_begin=100)
""")
    work_dir = tmp_path / 'work'
    argv = [str(config), '--work-dir', str(work_dir)]
    with pytest.raises(SystemExit) as stop:
        train_tool.main(argv)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert f'Error: Cannot read the image {train} (' in err
    kept = work_dir / 'iter_2.pth'
    assert kept.is_file() and not (work_dir / 'iter_3.pth').exists()
    command = f'python tools/train.py {config} --work-dir {work_dir} --resume'
    assert (f'The last checkpoint, {kept}, is kept. Fix the file (python '
            f'tools/check_dataset.py {config} lists every bad file) and '
            f'resume with: {command}\n') in err
    saved = torch.load(kept, map_location='cpu', weights_only=False)
    assert saved['meta']['iter'] == 2
    # Fixed, the printed command resumes from iteration 2 to the end.
    shutil.copy(data / 'images' / 'training' / 't0005.jpg', train)
    runner = train_tool.main(command.split()[2:])
    assert f'Auto resumed from the latest checkpoint {kept}' in \
        capsys.readouterr().out
    assert runner.iter == 3
