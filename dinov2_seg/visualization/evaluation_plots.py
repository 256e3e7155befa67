"""Pictures of an evaluation: per-class IoU, the confusion matrix and the
class pixel shares of ground truth and prediction, as PNG files.

Everything is computed from one confusion matrix (rows: ground truth,
columns: prediction, pixel counts), so the plots agree with each other and
with mmseg's IoUMetric, whose intersections are the diagonal, label areas
the row sums and prediction areas the column sums.
"""
import csv
import os
import os.path as osp
from typing import Dict, Sequence

import numpy as np

from .figures import new_figure, save_figure

# Beyond this many classes a full matrix is unreadable: show the most
# confused ones (and beyond as many the distribution shows the largest).
MAX_MATRIX_CLASSES = 20
MAX_SHARE_CLASSES = 30
DPI = 100


def per_class_scores(confusion: np.ndarray) -> Dict[str, np.ndarray]:
    """IoU and accuracy (recall) per class, and the pixel share of each class
    in the ground truth and in the prediction, from a confusion matrix.

    Classes absent from both ground truth and prediction get NaN IoU, and
    classes absent from the ground truth NaN accuracy, as in mmseg.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    label_area = confusion.sum(axis=1)
    pred_area = confusion.sum(axis=0)
    total = max(confusion.sum(), 1.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = hits / (label_area + pred_area - hits)
        acc = hits / label_area
    return dict(
        iou=iou,
        acc=acc,
        gt_share=label_area / total,
        pred_share=pred_area / total)


def iou_chart_size(num_classes: int) -> tuple:
    """Figure size (inches) of the IoU chart: a row per class, so 150
    classes stay legible."""
    return (8.0, 1.5 + 0.18 * num_classes)


def plot_per_class_iou(confusion: np.ndarray, classes: Sequence[str],
                       path: str) -> None:
    """Horizontal bars of per-class IoU (%), best first, with the mIoU as a
    line. Classes that occur neither in the ground truth nor in the
    prediction have no IoU and are listed in the title."""
    iou = per_class_scores(confusion)['iou'] * 100
    present = np.flatnonzero(~np.isnan(iou))
    order = present[np.argsort(-iou[present], kind='stable')]
    fig = new_figure(iou_chart_size(len(order)), DPI)
    ax = fig.add_subplot()
    ax.barh(np.arange(len(order)), iou[order], color='tab:blue')
    ax.set_yticks(np.arange(len(order)))
    ax.set_yticklabels([classes[i] for i in order],
                       fontsize=8 if len(order) <= 40 else 6)
    ax.set_ylim(len(order) - 0.5, -0.5)  # best on top, no empty margins
    ax.set_xlim(0, 100)
    ax.tick_params(labeltop=len(order) > 40)  # a scale on tall charts' top
    ax.set_xlabel('IoU (%)')
    if len(order) <= 40:
        for row, index in enumerate(order):
            ax.text(
                iou[index], row, f' {iou[index]:.1f}', va='center', fontsize=7)
    title = 'Per-class IoU'
    if len(order):
        miou = iou[order].mean()
        ax.axvline(miou, color='tab:red', linestyle='--', label='mIoU')
        title += f' (mIoU {miou:.2f}, dashed)'
    absent = len(iou) - len(order)
    if absent:
        title += (f'; {absent} class{"es" if absent > 1 else ""} in '
                  'neither ground truth nor prediction')
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def most_confused(confusion: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` classes with the most ground-truth pixels
    predicted as another class, most first."""
    confusion = np.asarray(confusion, dtype=np.float64)
    errors = confusion.sum(axis=1) - np.diag(confusion)
    return np.argsort(-errors, kind='stable')[:count]


def confusion_rows(confusion: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Row-normalised confusion (each ground-truth class sums to 1) of the
    ``shown`` classes; when classes are left out, a last column holds the
    share predicted as any of them."""
    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion[shown]
    with np.errstate(divide='ignore', invalid='ignore'):
        rows = rows / rows.sum(axis=1, keepdims=True)
    rows = np.nan_to_num(rows)
    if len(shown) == len(confusion):
        return rows[:, shown]
    return np.concatenate(
        [rows[:, shown], 1 - rows[:, shown].sum(axis=1, keepdims=True)],
        axis=1)


def confusion_chart_size(num_rows: int) -> tuple:
    side = 2.5 + 0.45 * num_rows
    return (side + 1.5, side)


def plot_confusion_matrix(confusion: np.ndarray, classes: Sequence[str],
                          path: str) -> None:
    """Row-normalised confusion matrix; with more than
    ``MAX_MATRIX_CLASSES`` classes, those most often mistaken (rows) against
    the same classes plus 'other' (columns)."""
    num_classes = len(confusion)
    if num_classes <= MAX_MATRIX_CLASSES:
        shown = np.arange(num_classes)
        title = 'Confusion matrix (rows: ground truth, normalised)'
    else:
        shown = most_confused(confusion, MAX_MATRIX_CLASSES)
        title = (f'The {len(shown)} most confused of {num_classes} classes '
                 '(rows: ground truth, normalised)')
    rows = confusion_rows(confusion, shown)
    names = [classes[i] for i in shown]
    fig = new_figure(confusion_chart_size(len(shown)), DPI)
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap='Blues', vmin=0, vmax=1, aspect='auto')
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(np.arange(rows.shape[1]))
    ax.set_xticklabels(
        names + (['other'] if rows.shape[1] > len(shown) else []),
        rotation=60,
        ha='right',
        fontsize=8)
    ax.set_yticks(np.arange(len(shown)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    if len(shown) <= 12:
        for (row, col), value in np.ndenumerate(rows):
            ax.text(
                col,
                row,
                f'{value:.2f}',
                ha='center',
                va='center',
                fontsize=7,
                color='white' if value > 0.5 else 'black')
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def share_chart_size(num_classes: int) -> tuple:
    return (max(6.0, 1.5 + 0.35 * num_classes), 5.0)


def plot_class_shares(confusion: np.ndarray, classes: Sequence[str],
                      path: str) -> None:
    """Each class's share of the labelled pixels in the ground truth and in
    the prediction, side by side (the largest ``MAX_SHARE_CLASSES``)."""
    scores = per_class_scores(confusion)
    plot_share_bars(
        {
            'ground truth': scores['gt_share'] * 100,
            'prediction': scores['pred_share'] * 100
        }, classes, path)


def plot_share_bars(shares: Dict[str, np.ndarray],
                    classes: Sequence[str],
                    path: str,
                    title: str = 'Class distribution') -> None:
    """The class distribution chart: per class, a bar for each series of
    ``shares`` (percent of the labelled pixels; e.g. ground truth and
    prediction, or the train and val splits) side by side, the classes
    largest in any series first (at most ``MAX_SHARE_CLASSES``)."""
    series = {name: np.asarray(v, np.float64) for name, v in shares.items()}
    largest = np.max(np.stack(list(series.values())), axis=0)
    shown = np.argsort(-largest, kind='stable')[:MAX_SHARE_CLASSES]
    x = np.arange(len(shown))
    width = 0.8 / len(series)
    fig = new_figure(share_chart_size(len(shown)), DPI)
    ax = fig.add_subplot()
    for index, (name, values) in enumerate(series.items()):
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar(x + offset, values[shown], width=width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([classes[i] for i in shown],
                       rotation=60,
                       ha='right',
                       fontsize=8)
    ax.set_ylabel('share of labelled pixels (%)')
    ax.legend()
    more = len(classes) - len(shown)
    ax.set_title(title + (f' (the {len(shown)} largest of {len(classes)} '
                          'classes)' if more else ''))
    save_figure(fig, path)


def write_evaluation_plots(confusion: np.ndarray, classes: Sequence[str],
                           out_dir: str) -> Dict[str, str]:
    """Write the three charts and the confusion matrix (CSV, pixel counts)
    to ``out_dir``; return their paths by name."""
    if len(classes) != len(confusion):
        raise ValueError(f'{len(classes)} class names for a '
                         f'{len(confusion)}-class confusion matrix')
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(
        per_class_iou=osp.join(out_dir, 'per_class_iou.png'),
        confusion_matrix=osp.join(out_dir, 'confusion_matrix.png'),
        class_distribution=osp.join(out_dir, 'class_distribution.png'),
        confusion_csv=osp.join(out_dir, 'confusion_matrix.csv'))
    plot_per_class_iou(confusion, classes, paths['per_class_iou'])
    plot_confusion_matrix(confusion, classes, paths['confusion_matrix'])
    plot_class_shares(confusion, classes, paths['class_distribution'])
    write_confusion_csv(confusion, classes, paths['confusion_csv'])
    return paths


def write_confusion_csv(confusion: np.ndarray, classes: Sequence[str],
                        path: str) -> None:
    """Pixel counts, a header row of predicted class names and a first
    column of ground-truth class names."""
    with open(path, 'w', encoding='utf-8', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(['ground truth \\ prediction', *classes])
        for name, row in zip(classes, np.asarray(confusion)):
            writer.writerow([name, *(int(v) for v in row)])
