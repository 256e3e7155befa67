"""Labels are checked where they are read (DinoLoadAnnotations): values
against the dataset's classes, one channel, the image's size; the error
names the file, what was found, the config's num_classes and
reduce_zero_label and the likely cause. The tools give the loader the
number of classes of each dataset."""
import shutil

import cv2
import numpy as np
import pytest
import torch
from helpers.tools import REPO, write_config
from mmengine.config import Config
from mmseg.registry import MODELS

from dinov2_seg.datasets.errors import LabelMapError
from dinov2_seg.datasets.transforms import DinoLoadAnnotations
from dinov2_seg.engine.run_config import load_config


def load(path,
         num_classes=None,
         reduce_zero_label=False,
         image_shape=None,
         backend='pillow'):
    results = dict(
        seg_map_path=str(path),
        reduce_zero_label=reduce_zero_label,
        seg_fields=[])
    if image_shape is not None:
        results['ori_shape'] = image_shape
    loader = DinoLoadAnnotations(
        num_classes=num_classes, imdecode_backend=backend)
    return loader(results)['gt_seg_map']


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory, shapes_root):
    """The shapes data with ids 7 and 9 planted in one val label (the
    issue's reproduction), a tiny config on it and a checkpoint."""
    root = tmp_path_factory.mktemp('planted')
    data = root / 'shapes'
    shutil.copytree(shapes_root, data)
    label_path = data / 'annotations' / 'validation' / 'v0002.png'
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    label[5:15, 5:25] = 7
    label[40:50, 60:80] = 9
    cv2.imwrite(str(label_path), label)
    config = write_config(root / 'tiny.py', data)
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return config, checkpoint, label_path


def test_planted_class_ids_stop_the_test_with_one_line(tmp_path, tiny_run,
                                                       capsys):
    """mmseg counted the planted pixels in no class and reported a lower
    mIoU without a word; now the run stops naming the file."""
    from dinov2_seg.cli import test as test_tool
    config, checkpoint, label_path = tiny_run
    with pytest.raises(SystemExit) as stop:
        test_tool.main(
            [str(config),
             str(checkpoint), '--work-dir',
             str(tmp_path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    (line, ) = [x for x in err.splitlines() if x.startswith('Error: ')]
    assert line == (
        f'Error: Label map {label_path} holds class values 6, 8 (stored as '
        '7, 9: reduce_zero_label=True subtracts 1) in 400 pixels, outside '
        '[0, 5) and not the ignore index 255; config: num_classes=5, '
        'reduce_zero_label=True. Likely cause: a wrong num_classes (the '
        "labels use classes up to 8: len(metainfo.classes) and the head's "
        'num_classes must count them all), or an ignore value other than '
        '255 (remap it to 255)')


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
def test_colour_label_names_the_file_and_the_palette(tmp_path, backend):
    """A 3-channel label ended in an IndexError inside mmseg's metric."""
    path = tmp_path / 'colour.png'
    cv2.imwrite(str(path), np.full((6, 8, 3), (180, 130, 70), np.uint8))
    with pytest.raises(LabelMapError) as err:
        load(path, num_classes=5, reduce_zero_label=True, backend=backend)
    assert str(err.value) == (
        f'Label map {path} has 3 channels (an RGB colour image, shape '
        '(6, 8, 3)); a label map holds one class index per pixel (an 8-bit '
        'grey or palette PNG). Likely cause: colour-coded labels: convert '
        "them with the palette (each class's colour -> its index, other "
        'colours -> 255); config: num_classes=5, reduce_zero_label=True')
    rgba = tmp_path / 'rgba.png'
    cv2.imwrite(str(rgba), np.full((6, 8, 4), 9, np.uint8))
    with pytest.raises(LabelMapError, match='has 4 channels'):
        load(rgba, backend=backend)


def test_missing_label_names_it_and_its_image(tmp_path):
    from dinov2_seg.datasets.errors import one_line_data_error
    missing = tmp_path / 'missing.png'
    with pytest.raises(FileNotFoundError) as err:
        DinoLoadAnnotations()(
            dict(
                img_path='a.jpg',
                seg_map_path=str(missing),
                reduce_zero_label=False,
                seg_fields=[]))
    assert one_line_data_error(err.value) == (
        f'Label map {missing} does not exist: the image a.jpg has no label '
        '(check seg_map_suffix and the label folder)')


def test_label_of_another_size_names_both_sizes(tmp_path):
    path = tmp_path / 'label.png'
    cv2.imwrite(str(path), np.zeros((30, 41), np.uint8))
    assert load(path, 5, image_shape=(30, 41)).shape == (30, 41)
    with pytest.raises(LabelMapError) as err:
        load(path, 5, image_shape=(30, 40))
    assert str(err.value).startswith(
        f'Label map {path} is 30x41 (HxW) but its image is 30x40: ')


def test_causes_follow_the_values_found(tmp_path):
    path = tmp_path / 'label.png'
    # 1-based labels (0 = unlabelled) read without reduce_zero_label: the
    # largest class comes out one past the last.
    cv2.imwrite(str(path), np.array([[0, 1, 2], [3, 4, 5]], np.uint8))
    assert load(
        path, 5, reduce_zero_label=True).tolist() == [[255, 0, 1], [2, 3, 4]]
    with pytest.raises(LabelMapError) as err:
        load(path, 5)
    assert 'holds class values 5 in 1 pixels' in str(err.value)
    assert 'reduce_zero_label=False. Likely cause: labels stored 1-based ' \
        "(0 = unlabelled, as ADE20K's): set reduce_zero_label=True" in str(
            err.value)
    # Colours saved as grey levels: values far beyond the classes.
    cv2.imwrite(str(path), np.array([[76, 150], [29, 255]], np.uint8))
    with pytest.raises(
            LabelMapError,
            match='holds class values 29, 76, '
            '150 in 3 pixels.*colour-coded labels saved as grey'):
        load(path, 5)


def test_wide_label_values_are_not_wrapped(tmp_path):
    """A 16-bit label's 300 was cast to 44 (a valid ADE20K class)."""
    path = tmp_path / 'wide.png'
    cv2.imwrite(str(path), np.array([[1, 300]], np.uint16))
    for backend in ('pillow', 'cv2'):
        with pytest.raises(LabelMapError, match='holds class values 299 '):
            load(path, 150, reduce_zero_label=True, backend=backend)


@pytest.mark.parametrize(
    'config, counts',
    [('demo_shapes_vits14_linear.py', dict(train=5, val=5)),
     ('ade20k_vits14_ms.py', dict(train=150, val=150, tta=150)),
     ('voc2012_vits14_ms.py', dict(train=21, val=21, tta=21))])
def test_tools_give_each_label_loader_its_dataset_classes(config, counts):
    cfg = load_config(str(REPO / 'configs' / config))
    found = {}

    def collect(name, pipeline):
        for step in pipeline:
            if step['type'] == 'TestTimeAug':
                for stage in step['transforms']:
                    collect(name, stage)
            elif step['type'] == 'DinoLoadAnnotations':
                found.setdefault(name, set()).add(step['num_classes'])

    def leaves(dataset):
        if 'datasets' in dataset:
            return [d for c in dataset.datasets for d in leaves(c)]
        return leaves(dataset.dataset) if 'dataset' in dataset else [dataset]

    for name in ('train', 'val'):
        for dataset in leaves(cfg[f'{name}_dataloader'].dataset):
            collect(name, dataset.pipeline)
    if cfg.get('tta_pipeline'):
        collect('tta', cfg.tta_pipeline)
    assert found == {name: {count} for name, count in counts.items()}


def test_benchmark_evaluation_checks_labels_as_the_test_tool(tmp_path):
    """tools/benchmark.py --mode dataset times the loader tools/test.py
    runs: with the label checks."""
    from dinov2_seg.benchmark.dataset import eval_loader_cfg
    cfg = load_config(str(REPO / 'configs' / 'demo_shapes_vits14_linear.py'))
    loader = eval_loader_cfg(cfg, str(tmp_path), 1, 1, cfg.test_pipeline)
    (step, ) = [
        s for s in loader.dataset.pipeline
        if s['type'] == 'DinoLoadAnnotations'
    ]
    assert step['num_classes'] == 5
