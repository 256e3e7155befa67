import filecmp
import shutil

import cv2
import numpy as np
import pytest
import torch
from helpers.tools import REPO
from mmcv.transforms import Compose
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from dinov2_seg.datasets import (SHAPES_CLASSES, SHAPES_PALETTE,
                                 check_dataset_paths, generate_shapes_dataset)

DEMO = REPO / 'configs' / 'demo_shapes_vits14_linear.py'


def test_shapes_dataset_layout_and_determinism(tmp_path):
    counts = generate_shapes_dataset(
        str(tmp_path / 'a'), num_train=3, num_val=2, size=(60, 80), seed=5)
    generate_shapes_dataset(
        str(tmp_path / 'b'), num_train=3, num_val=2, size=(60, 80), seed=5)
    assert counts == {'training': 3, 'validation': 2}
    labels = sorted((tmp_path / 'a' / 'annotations' / 'training').glob('*'))
    images = sorted((tmp_path / 'a' / 'images' / 'training').glob('*'))
    assert [p.stem for p in labels] == [p.stem for p in images
                                        ] == ['t0000', 't0001', 't0002']
    for label in labels:
        assert filecmp.cmp(
            label,
            tmp_path / 'b' / label.relative_to(tmp_path / 'a'),
            shallow=False)
        values = np.unique(cv2.imread(str(label), cv2.IMREAD_UNCHANGED))
        assert set(values) <= set(range(len(SHAPES_CLASSES) + 1))
        assert {0, 1, 2} <= set(values)  # outline, sky, ground
    image = cv2.imread(str(images[0]))
    assert image.shape == (60, 80, 3)


def test_shape_classes_have_their_colours(tmp_path):
    """Each class's pixels are near its palette colour (what makes the demo
    learnable)."""
    generate_shapes_dataset(
        str(tmp_path), num_train=4, num_val=0, size=(90, 120), seed=2)
    for label_path in (tmp_path / 'annotations' / 'training').glob('*.png'):
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(
            str(tmp_path / 'images' / 'training' /
                f'{label_path.stem}.jpg'))[..., ::-1].astype(float)
        for cls in (3, 4, 5):  # disc, box, triangle
            mask = cv2.erode((label == cls).astype(np.uint8), np.ones(
                (5, 5))).astype(bool)
            if mask.sum() < 20:
                continue
            mean = image[mask].mean(0)
            distances = [np.abs(mean - c).sum() for c in SHAPES_PALETTE]
            assert int(np.argmin(distances)) == cls - 1


def test_demo_config_declares_the_shapes_classes():
    cfg = Config.fromfile(str(DEMO))
    assert cfg.metainfo.classes == SHAPES_CLASSES
    assert cfg.metainfo.palette == SHAPES_PALETTE
    assert cfg.model.decode_head.num_classes == len(SHAPES_CLASSES)


def test_custom_dataset_through_the_demo_config(shapes_root):
    cfg = Config.fromfile(str(DEMO))
    cfg.val_dataloader.dataset.data_root = str(shapes_root)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(dataset) == 4
    assert dataset.metainfo['classes'] == SHAPES_CLASSES
    sample = dataset[0]
    assert sample['inputs'].shape[0] == 3
    labels = set(sample['data_samples'].gt_sem_seg.data.unique().tolist())
    # reduce_zero_label: outlines (0) are ignored, class i is stored as i+1
    assert 255 in labels and labels <= {0, 1, 2, 3, 4, 255}


def ade_config():
    return Config.fromfile(str(REPO / 'configs' / 'ade20k_vits14_linear.py'))


def test_missing_dataset_names_layout_and_key(tmp_path):
    cfg = ade_config()
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as err:
        check_dataset_paths(cfg, ['train_dataloader'])
    message = str(err.value)
    assert f'{tmp_path}/nowhere/images/training' in message
    assert 'images/{training,validation}/*.jpg' in message
    assert 'train_dataloader.dataset.data_root' in message
    assert 'ADE20KDataset' in message


def test_empty_image_folder_is_reported(tmp_path):
    for split in ('training', 'validation'):
        (tmp_path / 'images' / split).mkdir(parents=True)
        (tmp_path / 'annotations' / split).mkdir(parents=True)
    cfg = ade_config()
    cfg.val_dataloader.dataset.data_root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'holds no \*\.jpg images'):
        check_dataset_paths(cfg, ['val_dataloader'])


def test_present_dataset_passes(shapes_root):
    cfg = ade_config()
    for key in ('train_dataloader', 'val_dataloader'):
        cfg[key].dataset.data_root = str(shapes_root)
    check_dataset_paths(cfg, ['train_dataloader', 'val_dataloader'])


def test_voc_sbd_split_missing_names_the_wrapped_dataset(tmp_path, voc_root):
    root = tmp_path / 'VOC2012'
    shutil.copytree(voc_root, root)
    cfg = Config.fromfile(str(REPO / 'configs' / 'voc2012_vits14_ms.py'))
    for dataset in cfg.train_dataloader.dataset.datasets:
        dataset.data_root = str(root)
    with pytest.raises(FileNotFoundError) as err:
        check_dataset_paths(cfg, ['train_dataloader'])
    message = str(err.value)
    assert 'train_dataloader.dataset.datasets.1' in message
    assert 'SegmentationClassAug' in message
    # With SBD's label folder and split list in place the check passes.
    shutil.copytree(root / 'SegmentationClass', root / 'SegmentationClassAug')
    split = root / 'ImageSets' / 'Segmentation'
    shutil.copy(split / 'train.txt', split / 'aug.txt')
    check_dataset_paths(cfg, ['train_dataloader'])


def test_voc_files_through_the_official_pipeline(voc_root):
    cfg = Config.fromfile(str(REPO / 'configs' / 'voc2012_vits14_linear.py'))
    cfg.val_dataloader.dataset.data_root = str(voc_root)
    check_dataset_paths(cfg, ['val_dataloader'])
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(dataset) == 3
    for index in range(len(dataset)):
        sample = dataset[index]
        meta = sample['data_samples'].metainfo
        gt = sample['data_samples'].gt_sem_seg.data
        assert meta['ori_shape'] == (75, 110)
        # Resize (2048, 512) with keep_ratio: the short side becomes 512.
        assert tuple(sample['inputs'].shape[1:]) == (512, 751)
        # The class indices of the palette PNG (not its colours), with the
        # 255 borders kept.
        label = np.asarray(Image.open(meta['seg_map_path']))
        assert torch.equal(gt[0], torch.from_numpy(label.astype(np.int64)))
        assert 255 in label and len(np.unique(label)) >= 3


def load_pipeline():
    cfg = ade_config()
    return Compose(cfg.test_pipeline)


def run_pipeline(image_path, label_path):
    return load_pipeline()(
        dict(
            img_path=str(image_path),
            seg_map_path=str(label_path),
            reduce_zero_label=True,
            seg_fields=[]))


@pytest.fixture
def label_file(tmp_path):
    path = tmp_path / 'label.png'
    cv2.imwrite(str(path), np.full((30, 40), 3, np.uint8))
    return path


def test_grayscale_and_rgba_images_become_three_channel(tmp_path, label_file):
    grey = tmp_path / 'grey.jpg'
    cv2.imwrite(str(grey), np.full((30, 40), 128, np.uint8))
    rgba = tmp_path / 'rgba.png'
    cv2.imwrite(str(rgba), np.full((30, 40, 4), 200, np.uint8))
    for path in (grey, rgba):
        packed = run_pipeline(path, label_file)
        assert packed['inputs'].shape[0] == 3
        assert packed['data_samples'].ori_shape == (30, 40)


def test_corrupt_and_missing_images_name_the_file(tmp_path, label_file):
    corrupt = tmp_path / 'corrupt.jpg'
    corrupt.write_bytes(b'\xff\xd8 definitely not a jpeg')
    with pytest.raises(AssertionError, match=str(corrupt)):
        run_pipeline(corrupt, label_file)
    missing = tmp_path / 'missing.jpg'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_pipeline(missing, label_file)


def broken_pngs(tmp_path):
    png = cv2.imencode('.png', np.full((30, 40), 3, np.uint8))[1].tobytes()
    contents = {
        'not_an_image.png': b'plain text, not a PNG',
        'truncated.png': png[:len(png) // 2],
        'empty.png': b'',
    }
    for name, content in contents.items():
        (tmp_path / name).write_bytes(content)
        yield tmp_path / name


def test_corrupt_labels_name_the_file(tmp_path):
    image = tmp_path / 'image.jpg'
    cv2.imwrite(str(image), np.full((30, 40, 3), 128, np.uint8))
    for label in broken_pngs(tmp_path):
        with pytest.raises(OSError) as err:
            run_pipeline(image, label)
        assert f'Cannot read the label map {label} (' in str(err.value)
        assert 'class indices' in str(err.value)
    missing = tmp_path / 'missing.png'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_pipeline(image, missing)


def test_corrupt_label_in_a_dataset_names_the_file(tmp_path, shapes_root):
    """Through the demo config's dataset, as training and testing read it."""
    root = tmp_path / 'shapes'
    shutil.copytree(shapes_root, root)
    label = root / 'annotations' / 'validation' / 'v0001.png'
    label.write_bytes(label.read_bytes()[:100])
    cfg = Config.fromfile(str(DEMO))
    cfg.val_dataloader.dataset.data_root = str(root)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    dataset[0]
    with pytest.raises(OSError, match=f'Cannot read the label map {label}'):
        dataset[1]


def load_label(path, backend, reduce_zero_label=False, label_map=None):
    from dinov2_seg.datasets.transforms import DinoLoadAnnotations
    return DinoLoadAnnotations(imdecode_backend=backend)(dict(
        seg_map_path=str(path),
        reduce_zero_label=reduce_zero_label,
        label_map=label_map,
        seg_fields=[]))['gt_seg_map']


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
def test_label_decode_failures_name_the_file_with_either_backend(
        tmp_path, backend):
    # cv2 returns None for bytes it cannot decode and raises on empty ones;
    # PIL raises its own errors: all become the error naming the file.
    for label in broken_pngs(tmp_path):
        with pytest.raises(OSError) as err:
            load_label(label, backend)
        assert str(
            err.value).startswith(f'Cannot read the label map {label} ('), str(
                err.value)


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
def test_label_values_as_mmseg_defines_them(tmp_path, backend):
    values = np.array([[0, 1, 2], [5, 254, 255]], np.uint8)
    path = tmp_path / 'label.png'
    cv2.imwrite(str(path), values)
    assert load_label(path, backend).tolist() == values.tolist()
    # reduce_zero_label: 0 (unlabelled) -> 255, k -> k - 1, 255 stays.
    assert load_label(path, backend, True).tolist() == [[255, 0, 1],
                                                        [4, 253, 255]]
    # label_map applied to the original values, each pixel once.
    assert load_label(path, backend, False, {
        1: 2,
        2: 1
    }).tolist() == [[0, 2, 1], [5, 254, 255]]


def test_errors_other_than_decoding_propagate_unchanged(tmp_path, monkeypatch):
    """A bug (here an AttributeError raised inside the decoder) is not
    reported as an unreadable label file."""
    import mmcv
    path = tmp_path / 'label.png'
    cv2.imwrite(str(path), np.full((3, 4), 1, np.uint8))

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'oops'")

    monkeypatch.setattr(mmcv, 'imfrombytes', broken)
    with pytest.raises(AttributeError, match='oops') as err:
        load_label(path, 'pillow')
    assert type(err.value) is AttributeError
