"""The confusion-matrix metric and the evaluation charts, on hand-computed
cases."""
import csv

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from PIL import Image

from dinov2_seg.evaluation import ConfusionIoUMetric
from dinov2_seg.visualization.evaluation_plots import (confusion_rows,
                                                       most_confused,
                                                       per_class_scores,
                                                       write_evaluation_plots)

CLASSES = ('road', 'car', 'tree')
# Two images; 255 is ignored.
GT = [
    np.array([[0, 0, 1], [1, 2, 255]]),
    np.array([[2, 2], [0, 1]]),
]
PRED = [
    np.array([[0, 1, 1], [2, 2, 0]]),
    np.array([[2, 0], [0, 0]]),
]
# (gt, pred) pairs counted by hand: image 1 gives (0,0) (0,1) (1,1) (1,2)
# (2,2), the ignored pixel nothing; image 2 gives (2,2) (2,0) (0,0) (1,0).
CONFUSION = np.array([
    [2, 1, 0],
    [1, 1, 1],
    [1, 0, 2],
])


def sample(gt: np.ndarray, pred: np.ndarray) -> dict:
    data = SegDataSample(
        gt_sem_seg=PixelData(data=torch.from_numpy(gt)[None]),
        pred_sem_seg=PixelData(data=torch.from_numpy(pred)[None]))
    return data.to_dict()


def evaluate(metric: ConfusionIoUMetric) -> dict:
    metric.dataset_meta = dict(classes=CLASSES)
    for gt, pred in zip(GT, PRED):
        metric.process({}, [sample(gt, pred)])
    return metric.evaluate(len(GT))


def test_confusion_matrix_and_metrics_by_hand():
    metric = ConfusionIoUMetric()
    metrics = evaluate(metric)
    assert (metric.confusion_matrix == CONFUSION).all()
    # Ground-truth areas (row sums) 3, 3, 3; predicted (column sums) 4, 2,
    # 3. IoU = TP / (gt area + predicted area - TP): road 2 / (3 + 4 - 2),
    # car 1 / (3 + 2 - 1), tree 2 / (3 + 3 - 2); accuracy = TP / gt area.
    iou = np.array([2 / 5, 1 / 4, 2 / 4])
    acc = np.array([2 / 3, 1 / 3, 2 / 3])
    scores = per_class_scores(metric.confusion_matrix)
    np.testing.assert_allclose(scores['iou'], iou)
    np.testing.assert_allclose(scores['acc'], acc)
    np.testing.assert_allclose(scores['gt_share'], [3 / 9, 3 / 9, 3 / 9])
    np.testing.assert_allclose(scores['pred_share'], [4 / 9, 2 / 9, 3 / 9])
    # mmseg's IoUMetric numbers, unchanged: aAcc = 5 / 9.
    assert metrics['aAcc'] == pytest.approx(100 * 5 / 9, abs=0.005)
    assert metrics['mIoU'] == pytest.approx(100 * iou.mean(), abs=0.005)
    assert metrics['mAcc'] == pytest.approx(100 * acc.mean(), abs=0.005)


def test_per_class_scores_with_absent_classes():
    # Class 2 never occurs; class 1 is only predicted.
    confusion = np.array([[5, 3, 0], [0, 0, 0], [0, 0, 0]])
    scores = per_class_scores(confusion)
    np.testing.assert_allclose(scores['iou'][:2], [5 / 8, 0 / 3])
    assert np.isnan(scores['iou'][2])
    assert scores['acc'][0] == 5 / 8 and np.isnan(scores['acc'][1])
    np.testing.assert_allclose(scores['pred_share'], [5 / 8, 3 / 8, 0])


def test_many_classes_show_the_most_confused_and_other():
    confusion = np.diag(np.full(25, 100))
    confusion[7, 3] = 40  # class 7: 40 wrong pixels
    confusion[12, 20] = 10  # class 12: 10 wrong, 5 more into class 24
    confusion[12, 24] = 5
    confusion[3, 7] = 30
    shown = most_confused(confusion, 3)
    assert list(shown) == [7, 3, 12]
    rows = confusion_rows(confusion, shown)
    # Rows: gt 7, 3, 12; columns: 7, 3, 12, other.
    np.testing.assert_allclose(rows[0], [100 / 140, 40 / 140, 0, 0])
    np.testing.assert_allclose(rows[1], [30 / 130, 100 / 130, 0, 0])
    np.testing.assert_allclose(rows[2], [0, 0, 100 / 115, 15 / 115])


def test_plots_are_real_images_of_the_documented_size(tmp_path):
    metric = ConfusionIoUMetric(plot_dir=str(tmp_path / 'plots'))
    evaluate(metric)
    folder = tmp_path / 'plots'
    # Sizes in inches at 100 dpi: the IoU chart has a row of 0.18 in per
    # class over 1.5 in; the confusion matrix is 2.5 + 0.45 in per class
    # tall and 1.5 in wider (colour bar); the distribution 6 in wide at
    # least, 5 in tall.
    expected = {
        'per_class_iou.png': (800, round(100 * (1.5 + 0.18 * 3))),
        'confusion_matrix.png':
        (round(100 * (4 + 0.45 * 3)), round(100 * (2.5 + 0.45 * 3))),
        'class_distribution.png': (600, 500),
    }
    for name, size in expected.items():
        with Image.open(folder / name) as image:
            assert image.format == 'PNG'
            assert image.size == size, name
            pixels = np.asarray(image.convert('L'))
        assert pixels.std() > 10, f'{name} is blank'
    with open(folder / 'confusion_matrix.csv', newline='') as file:
        rows = list(csv.reader(file))
    assert rows[0][1:] == list(CLASSES)
    assert [r[0] for r in rows[1:]] == list(CLASSES)
    assert np.array([r[1:] for r in rows[1:]], int).tolist() == \
        CONFUSION.tolist()


def test_150_classes_stay_readable(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f'class {i}' for i in range(150)]
    confusion = np.diag(rng.integers(100, 1000, 150))
    confusion += rng.integers(0, 20, (150, 150))
    confusion[40] = 0  # a class present nowhere
    confusion[:, 40] = 0
    paths = write_evaluation_plots(confusion, classes, str(tmp_path))
    with Image.open(paths['per_class_iou']) as image:
        # 149 rows with an IoU.
        assert image.size == (800, round(100 * (1.5 + 0.18 * 149)))
    with Image.open(paths['confusion_matrix']) as image:
        assert image.size == (round(100 * (4 + 0.45 * 20)),
                              round(100 * (2.5 + 0.45 * 20)))
    with Image.open(paths['class_distribution']) as image:
        assert image.size == (round(100 * (1.5 + 0.35 * 30)), 500)


def test_class_names_must_match_the_matrix(tmp_path):
    with pytest.raises(ValueError, match='2 class names for a 3-class'):
        write_evaluation_plots(CONFUSION, CLASSES[:2], str(tmp_path))
