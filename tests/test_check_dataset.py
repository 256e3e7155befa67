"""tools/check_dataset.py: every image/label pair of a config's datasets,
checked with the config's own dataset classes and loaders."""
import json
import shutil

import cv2
import numpy as np
import pytest
from helpers.tools import write_config
from PIL import Image

from dinov2_seg.cli import check_dataset


def reference_pixels(root, split):
    """Pixels per class of the shapes labels, read here: file value v in
    1..5 is class v - 1 (reduce_zero_label), 0 is ignored."""
    counts = np.zeros(5, np.int64)
    for path in sorted((root / 'annotations' / split).glob('*.png')):
        value = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)
        counts += np.bincount(value[value > 0] - 1, minlength=5)
    return counts.tolist()


def test_clean_data_passes_with_its_class_distribution(tmp_path, shapes_root,
                                                       capsys):
    config = write_config(tmp_path / 'shapes.py', shapes_root)
    out = tmp_path / 'report'
    status = check_dataset.main(
        [str(config), '--workers', '2', '--out-dir',
         str(out)])
    assert status == 0
    report = json.loads((out / 'report.json').read_text())
    assert (report['errors'], report['warnings']) == (0, 0)
    assert sorted(report['splits']) == ['train', 'val']  # test = val
    for name, folder, images in (('train', 'training', 8), ('val',
                                                            'validation', 4)):
        split = report['splits'][name]
        assert split['images'] == images
        assert split['label_modes'] == {'grey': images}
        assert split['class_pixels'] == reference_pixels(shapes_root, folder)
    chart = Image.open(out / 'class_distribution.png')
    assert chart.size[0] >= 600
    markdown = (out / 'report.md').read_text()
    assert '| train | 8 | 0 | 0 | grey 8 |' in markdown
    assert '0 errors, 0 warnings' in capsys.readouterr().out


@pytest.fixture
def bad_data(tmp_path, shapes_root):
    data = tmp_path / 'shapes'
    shutil.copytree(shapes_root, data)
    labels, images = data / 'annotations', data / 'images'
    planted = labels / 'validation' / 'v0002.png'
    label = cv2.imread(str(planted), cv2.IMREAD_UNCHANGED)
    label[5:15, 5:25], label[40:50, 60:80] = 7, 9
    cv2.imwrite(str(planted), label)
    colour = labels / 'validation' / 'v0003.png'
    cv2.imwrite(str(colour), np.full((90, 125, 3), (180, 130, 70), np.uint8))
    palette = labels / 'validation' / 'v0000.png'
    as_palette = Image.fromarray(cv2.imread(str(palette), 0), 'L').convert('P')
    as_palette.save(palette)
    # A JPEG cut short: cv2 decodes it, greying the rest without a word.
    cut = images / 'training' / 't0001.jpg'
    cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 2])
    (images / 'training' / 't0002.jpg').write_bytes(b'not an image')
    resized = labels / 'training' / 't0003.png'
    cv2.imwrite(
        str(resized),
        cv2.resize(
            cv2.imread(str(resized), 0), (124, 90),
            interpolation=cv2.INTER_NEAREST))
    jpeg = labels / 'training' / 't0004.png'
    jpeg.write_bytes(
        cv2.imencode('.jpg', cv2.imread(str(jpeg), 0))[1].tobytes())
    (labels / 'training' / 't0005.png').rename(labels / 'training' /
                                               'x0005.png')
    return data


def test_bad_files_are_each_reported(tmp_path, bad_data, capsys):
    config = write_config(tmp_path / 'bad.py', bad_data)
    out = tmp_path / 'report'
    status = check_dataset.main(
        [str(config), '--workers', '0', '--out-dir',
         str(out)])
    assert status == 1
    report = json.loads((out / 'report.json').read_text())
    kinds = {}
    for name, split in report['splits'].items():
        for found in split['findings']:
            kinds.setdefault((found['kind'], found['level']),
                             set()).add(found['file'])
    train, val = bad_data / 'images' / 'training', bad_data / 'annotations'
    assert kinds == {
        # JPEG's ringing at the edges writes values no class has
        ('label_values', 'error'): {
            str(val / 'validation' / 'v0002.png'),
            str(val / 'training' / 't0004.png')
        },
        ('label_channels', 'error'): {str(val / 'validation' / 'v0003.png')},
        ('truncated', 'error'): {str(train / 't0001.jpg')},
        ('unreadable', 'error'): {str(train / 't0002.jpg')},
        ('size', 'error'): {str(val / 'training' / 't0003.png')},
        ('jpeg_label', 'error'): {str(val / 'training' / 't0004.png')},
        ('missing_label', 'error'): {str(train / 't0005.jpg')},
        ('label_without_image', 'warning'):
        {str(val / 'training' / 'x0005.png')},
    }
    assert report['splits']['val']['label_modes'] == {
        'palette': 1,
        'grey': 2,
        'RGB': 1
    }
    assert report['splits']['train']['label_modes'] == {'grey': 7}
    by_file = {f['label']: f for f in report['splits']['val']['files']}
    (finding, ) = by_file[str(val / 'validation' / 'v0002.png')]['problems']
    assert finding['message'].startswith(
        f"Label map {val / 'validation' / 'v0002.png'} holds class values "
        '6, 8 (stored as 7, 9: reduce_zero_label=True subtracts 1) in 400 '
        'pixels, outside [0, 5)')
    assert report['errors'] == 8 and report['warnings'] == 1
    printed = capsys.readouterr().out
    assert f"error [truncated] Image {train / 't0001.jpg'} is truncated" in \
        printed
    assert '8 errors, 1 warnings' in printed
    assert str(train / 't0002.jpg') in (out / 'report.md').read_text()


def test_empty_split_and_head_classes_are_errors(tmp_path, shapes_root):
    config = write_config(tmp_path / 'shapes.py', shapes_root)
    out = tmp_path / 'report'
    status = check_dataset.main([
        str(config), '--split', 'val', '--out-dir',
        str(out), '--cfg-options', 'model.decode_head.num_classes=6',
        'val_dataloader.dataset.img_suffix=.bmp'
    ])
    assert status == 1
    report = json.loads((out / 'report.json').read_text())
    val, test = report['splits']['val'], report['splits']['test']
    assert [f['kind'] for f in val['findings']] == ['layout']
    assert 'holds no *.bmp images' in val['findings'][0]['message']
    assert [f['kind'] for f in test['findings']] == ['num_classes']
    assert test['findings'][0]['message'] == (
        'model.decode_head.num_classes=6 but test_dataloader\'s dataset has '
        '5 classes (metainfo.classes): they must be equal')
