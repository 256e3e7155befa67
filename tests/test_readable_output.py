"""What the tools print by default (progress, warnings, results), the charts
of tools/test.py --plot-dir, tools/plot_curves.py and TensorBoard logging,
on one tiny training run."""
import csv
import json
import re
import shutil
import sys

import numpy as np
import pytest
from helpers.modules import require
from helpers.tools import check, run, write_config
from PIL import Image

CLASSES = ('sky', 'ground', 'disc', 'box', 'triangle')


@pytest.fixture(scope='module')
def trained(tmp_path_factory, shapes_root):
    """A 6-iteration run (validation at the end), as the user sees it."""
    root = tmp_path_factory.mktemp('readable')
    config = write_config(root / 'tiny.py', shapes_root)
    work = root / 'work'
    result = run('tools/train.py', config, '--work-dir', work)
    check(result)
    return config, work, result


@pytest.mark.slow
def test_training_console_shows_progress_warnings_and_results(trained):
    _, work, result = trained
    console = result.stdout + result.stderr
    # One progress line (no terminal: every 10% and at the end).
    assert re.search(r'train .* 6/6 iters loss \d+\.\d{4}  lr ', console)
    assert 'eta' in console
    # A warning the user can act on stays ...
    assert 'the backbone is randomly initialised' in console
    # ... the libraries' noise and mmengine's log lines go.
    for noise in ('Config:', 'Hooks will be executed', 'Iter(train)',
                  'build_loss', 'avg_non_ignore', 'System environment'):
        assert noise not in console, noise
    # mmengine's lines that a user acts on stay: where the checkpoints go
    # and the SyncBN -> BN conversion of a single-process run.
    assert re.search(rf'^Checkpoints will be saved to {re.escape(str(work))}',
                     console, re.M)
    assert re.search(
        r'^Distributed training is not used, all SyncBatchNorm \(SyncBN\) '
        'layers in the model will be automatically reverted', console, re.M)
    # The validation results: mmseg's table without log prefixes, then
    # one line of metrics.
    assert re.search(r'^\+-+\+-+\+-+\+$', console, re.M)
    for name in CLASSES:
        assert re.search(rf'^\|\s+{name}\s+\|', console, re.M), name
    assert re.search(
        r'^Validation at iteration 6: aAcc: \d+\.\d\d  mIoU: \d+\.\d\d  '
        r'mAcc: \d+\.\d\d$', console, re.M)
    assert len(console.splitlines()) < 60
    # mmengine's full log is still in the work dir.
    log = next(work.glob('*/*.log')).read_text()
    for line in ('Config:', 'Hooks will be executed', 'Iter(train) [6/6]',
                 'per class results'):
        assert line in log, line


@pytest.mark.slow
@pytest.mark.slow
def test_resume_says_what_it_loaded(trained, tmp_path):
    config, work, _ = trained
    copy = tmp_path / 'work'
    shutil.copytree(work, copy)
    # mmengine resumes from the file named in last_checkpoint.
    (copy / 'last_checkpoint').write_text(str(copy / 'iter_6.pth'))
    console = check(
        run('tools/train.py', config, '--work-dir', copy, '--resume'))
    checkpoint = re.escape(str(copy / 'iter_6.pth'))
    assert re.search(rf'^Auto resumed from the latest checkpoint {checkpoint}',
                     console, re.M), console
    assert re.search(r'^resumed epoch: 0, iter: 6$', console, re.M)
    assert 'Iter(train)' not in console


@pytest.mark.slow
def test_test_tool_writes_plots_that_match_its_metrics(trained, tmp_path,
                                                       shapes_root):
    config, work, _ = trained
    plots = tmp_path / 'plots'
    result = run('tools/test.py', config, work / 'iter_6.pth', '--work-dir',
                 tmp_path / 'test', '--plot-dir', plots)
    console = check(result)
    assert re.search(r'test .* 4/4 images', console)
    assert f'Plots in {plots}: per_class_iou.png' in console
    # The confusion matrix gives the printed numbers: IoU = TP / (row sum +
    # column sum - TP), mIoU over classes present, aAcc = trace / total.
    with open(plots / 'confusion_matrix.csv', newline='') as file:
        rows = list(csv.reader(file))
    assert [r[0] for r in rows[1:]] == list(CLASSES)
    matrix = np.array([r[1:] for r in rows[1:]], dtype=float)
    hits = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - hits
    iou = hits[union > 0] / union[union > 0]
    summary = re.search(r'^aAcc: ([\d.]+)  mIoU: ([\d.]+)  mAcc: [\d.]+$',
                        result.stdout, re.M)
    assert summary, console[-2000:]
    assert float(summary.group(1)) == pytest.approx(
        100 * hits.sum() / matrix.sum(), abs=0.006)
    assert float(summary.group(2)) == pytest.approx(
        100 * iou.mean(), abs=0.006)
    # Rows count the ground truth: the validation label PNGs, where 0 is
    # unlabelled and k is class k - 1 (reduce_zero_label).
    labels = np.concatenate([
        np.asarray(Image.open(p)).ravel()
        for p in sorted((shapes_root / 'annotations' / 'validation').iterdir())
    ])
    assert matrix.sum(1).tolist() == [(labels == k + 1).sum()
                                      for k in range(5)]
    for name in ('per_class_iou', 'confusion_matrix', 'class_distribution'):
        with Image.open(plots / f'{name}.png') as image:
            assert image.format == 'PNG' and min(image.size) >= 200


@pytest.mark.slow
def test_plot_dir_needs_an_iou_metric(trained, tmp_path):
    config, work, _ = trained
    result = run('tools/test.py', config, work / 'iter_6.pth', '--plot-dir',
                 tmp_path, '--cfg-options',
                 'test_evaluator.type=CityscapesMetric')
    assert result.returncode != 0
    assert ("--plot-dir needs test_evaluator to hold mmseg's IoUMetric "
            "(type='IoUMetric'); this config has ['CityscapesMetric']"
            ) in result.stderr


def scalars(work) -> list:
    path = next(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_plot_curves_overlays_runs_and_merges_resumed_logs(trained, tmp_path):
    from dinov2_seg.visualization.training_curves import plot_training_curves
    _, work, _ = trained
    entries = scalars(work)
    losses = [(e['step'], e['loss']) for e in entries if 'loss' in e]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    miou = [(e['step'], e['mIoU']) for e in entries if 'mIoU' in e]
    assert [s for s, _ in miou] == [6]
    # A second run, resumed at iteration 4: a new timestamped folder whose
    # entries replace the first part's from step 4 on.
    other = tmp_path / 'ablation'
    shutil.copytree(work, other)
    resumed = other / '99999999_999999' / 'vis_data'
    resumed.mkdir(parents=True)
    (resumed / 'scalars.json').write_text(''.join(
        json.dumps(dict(loss=10.0 + step, lr=0.5, step=step)) + '\n'
        for step in (4, 5, 6)))

    out = tmp_path / 'curves.png'
    plotted = plot_training_curves([str(work), str(other)], str(out))
    assert list(plotted) == ['work', 'ablation']
    steps, values = plotted['work']['loss']
    assert steps.tolist() == [s for s, _ in losses]
    np.testing.assert_allclose(values, [v for _, v in losses])
    steps, values = plotted['ablation']['loss']
    assert steps.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(values[:3], [v for _, v in losses[:3]])
    assert values[3:].tolist() == [14.0, 15.0, 16.0]
    assert plotted['work']['mIoU'][1].tolist() == [v for _, v in miou]
    with Image.open(out) as image:  # 8 x (0.5 + 2.5 per panel) in, 100 dpi
        assert image.size == (800, 800)

    result = run('tools/plot_curves.py', work, '--keys', 'loss',
                 'decode.acc_seg', '--out', tmp_path / 'tool.png')
    log = check(result)
    assert 'work: loss (6 points), decode.acc_seg (6 points)' in log
    with Image.open(tmp_path / 'tool.png') as image:
        assert image.size == (800, 550)


@pytest.mark.slow
def test_plot_curves_names_a_folder_without_logs(tmp_path):
    result = run('tools/plot_curves.py', tmp_path)
    assert result.returncode != 0
    assert f'{tmp_path} holds no */vis_data/scalars.json' in result.stderr


@pytest.mark.slow
def test_tensorboard_backend_from_the_command_line(tmp_path, shapes_root):
    event_accumulator = require(
        'tensorboard.backend.event_processing.event_accumulator')
    config = write_config(tmp_path / 'tiny.py', shapes_root)
    work = tmp_path / 'work'
    check(
        run('tools/train.py', config, '--work-dir', work, '--cfg-options',
            'visualizer.vis_backends=[LocalVisBackend,TensorboardVisBackend]',
            'train_cfg.max_iters=3', 'train_cfg.val_interval=3'))
    events = list(work.glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1
    reader = event_accumulator.EventAccumulator(str(events[0].parent))
    reader.Reload()
    logged = scalars(work)
    for key in ('loss', 'lr', 'mIoU'):
        expected = [(e['step'], e[key]) for e in logged if key in e]
        assert expected, key
        found = [(e.step, e.value) for e in reader.Scalars(key)]
        assert [s for s, _ in found] == [s for s, _ in expected]
        np.testing.assert_allclose([v for _, v in found],
                                   [v for _, v in expected],
                                   rtol=1e-6)


def test_backend_names_become_configs():
    from mmengine.config import Config

    from dinov2_seg.engine.vis_backends import expand_vis_backends
    cfg = Config(
        dict(
            visualizer=dict(
                type='SegLocalVisualizer',
                vis_backends=['LocalVisBackend', 'WandbVisBackend'])))
    expand_vis_backends(cfg)
    assert cfg.visualizer.vis_backends == [
        dict(type='LocalVisBackend'),
        dict(type='WandbVisBackend')
    ]


def test_verbose_config_key_keeps_mmengine_console():
    from mmengine.config import Config
    from mmengine.runner import Runner

    from dinov2_seg.engine import QuietConsoleRunner, runner_for_console
    cfg = Config(
        dict(custom_hooks=[dict(type='FrozenBackboneCheckpointHook')]))
    assert runner_for_console(cfg) is QuietConsoleRunner
    assert [h['type'] for h in cfg.custom_hooks
            ] == ['FrozenBackboneCheckpointHook', 'DinoProgressBarHook']
    assert runner_for_console(Config(dict(verbose=True))) is Runner
    assert runner_for_console(Config(), verbose=True) is Runner


def test_progress_lines_without_a_terminal(capsys):
    from dinov2_seg.engine.hooks.progress_bar_hook import ProgressDisplay
    phase = ProgressDisplay('train', 100, 0, 'iters', 0.1, every_seconds=3600)
    for done in range(1, 26):
        phase.update(done, f'loss {1 / done:.4f}')
    phase.finish()
    lines = capsys.readouterr().out.splitlines()
    # At 10 and 20 (each 10% of the loop), then once at the end.
    assert [re.search(r' (\d+)/100 iters', line).group(1)
            for line in lines] == ['10', '20', '25']
    assert 'eta' in lines[0]
    assert 'loss 0.1000' in lines[0]
    # every_seconds=0: a line at every update.
    phase = ProgressDisplay('val', 4, 0, 'images', 0.5, every_seconds=0)
    for done in range(1, 5):
        phase.update(done)
    phase.finish()
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_progress_bar_redraws_in_a_terminal(capsys, monkeypatch):
    from dinov2_seg.engine.hooks.progress_bar_hook import ProgressDisplay
    monkeypatch.setenv('TTY_COMPATIBLE', '1')  # rich: treat as a terminal
    phase = ProgressDisplay('train', 3, 0, 'iters', 0.1, every_seconds=3600)
    for done in range(1, 4):
        phase.update(done, 'loss 0.5000')
    phase.finish()
    out = capsys.readouterr().out
    # Drawn in place (cursor controls, no new line per update), ending on
    # the full bar.
    plain = re.sub(r'\x1b\[[0-9;?]*[A-Za-z]', '', out)
    assert '0/3 iters' in plain and '3/3 iters' in plain
    assert plain.count('\n') <= 2


def test_console_filter_lets_through_what_users_act_on():
    """mmengine's INFO lines about loading, resuming, checkpoints and the
    SyncBN conversion pass the quiet console; the rest of INFO does not."""
    import logging

    from dinov2_seg.engine import ConsoleFilter
    console_filter = ConsoleFilter()

    def shown(message, level=logging.INFO):
        return console_filter.filter(
            logging.LogRecord('mmengine', level, __file__, 1, message, None,
                              None))

    for message in (
            'Load checkpoint from work_dirs/run/iter_4000.pth',
            'Auto resumed from the latest checkpoint work_dirs/r/iter_8.pth.',
            'resumed epoch: 0, iter: 8',
            'Checkpoints will be saved to /data/work_dirs/run.',
            'The best checkpoint with 47.3100 mIoU at 8000 iter is saved to '
            'best_mIoU_iter_8000.pth.',
            'Distributed training is not used, all SyncBatchNorm (SyncBN) '
            'layers in the model will be automatically reverted to '
            'BatchNormXd layers if they are used.'):
        assert shown(message), message
    for message in ('Iter(train) [10/40000]  lr: 1.0e-03  loss: 2.3',
                    'Hooks will be executed in the following order:',
                    'Saving checkpoint at 8 iterations'):
        assert not shown(message), message
    assert shown('the backbone is randomly initialised', logging.WARNING)
    assert not shown('``build_loss`` would be deprecated soon',
                     logging.WARNING)
    # A frozen backbone's parameters, one warning each (Mask2Former recipe).
    assert not shown(
        'backbone.blocks.0.ls1.gamma is skipped since its '
        'requires_grad=False', logging.WARNING)
    # mmengine's FSDP strategy, once per run (it then finds the policy).
    assert not shown(
        'Failed to search registry with scope "mmseg" in the "function" '
        'registry tree. As a workaround, the current "function" registry '
        'in "mmengine" is used to build instance.', logging.WARNING)


def build_loss(loss):
    from mmseg.registry import MODELS
    return MODELS.build(loss)


def test_avg_non_ignore_warning_hidden_for_the_recipe_losses_only():
    import warnings

    from helpers.tools import REPO
    from mmengine.config import Config

    from dinov2_seg.engine.console import hide_library_noise

    # The tools' noise filter does not hide it process-wide: a user's own
    # loss still warns after it ...
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        hide_library_noise()
        build_loss(dict(type='CrossEntropyLoss', loss_weight=0.4))
    assert any('avg_non_ignore' in str(w.message) for w in caught)

    from dinov2_seg.engine.console import RECIPE_LOSS, recipe_warnings_hidden

    # The recipe's loss, as the linear and ms configs set it.
    for name in ('voc2012_vits14_linear.py', 'ade20k_vitb14_ms.py'):
        cfg = Config.fromfile(str(REPO / 'configs' / name))
        assert cfg.model.decode_head.loss_decode == RECIPE_LOSS, name
    recipe = dict(
        decode_head=dict(loss_decode=dict(RECIPE_LOSS)),
        auxiliary_head=dict(loss_decode=[dict(RECIPE_LOSS)]))
    own = dict(
        decode_head=dict(loss_decode=dict(RECIPE_LOSS)),
        auxiliary_head=dict(loss_decode=[dict(RECIPE_LOSS, loss_weight=0.4)]))
    # ... and while a model is built, only the recipe's losses are quiet.
    for model, hidden in ((recipe, True), (own, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            with recipe_warnings_hidden(model):
                for head in model.values():
                    losses = head['loss_decode']
                    for loss in losses if isinstance(losses,
                                                     list) else [losses]:
                        build_loss(loss)
        warned = any('avg_non_ignore' in str(w.message) for w in caught)
        assert warned != hidden, model


def test_a_failing_run_stops_the_progress_bar(capsys, monkeypatch):
    """An exception in the middle of training (a bad file, out of memory,
    Ctrl-C) must not leave the live bar running: rich hides the cursor and
    holds sys.stdout until it is stopped."""
    from types import SimpleNamespace

    from mmengine.runner import Runner

    from dinov2_seg.engine import DinoProgressBarHook, QuietConsoleRunner
    monkeypatch.setenv('TTY_COMPATIBLE', '1')  # rich: treat as a terminal
    hook = DinoProgressBarHook()
    runner = object.__new__(QuietConsoleRunner)  # the hooks are all it needs
    runner._hooks = [hook]
    stdout = sys.stdout
    phases = []

    def failing_train(self):
        hook.before_train(SimpleNamespace(max_iters=10, iter=3))
        phases.append(hook._phases['train'])
        assert sys.stdout is not stdout  # rich's proxy while live
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, 'train', failing_train)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.train()
        assert not phases[0].progress.live.is_started
        assert sys.stdout is stdout
        out = capsys.readouterr().out
        hide, show = '\x1b[?25l', '\x1b[?25h'
        assert hide in out and show in out.rsplit(hide, 1)[1]
    finally:  # leave the test session's terminal as it was either way
        phases[0].progress.stop()


def run_in_terminal(*args, timeout: int = 600) -> tuple:
    """``python ARGS...`` from the repository root with a pseudo-terminal as
    its console (so rich draws live): exit status and everything shown."""
    import os
    import pty
    import select
    import subprocess
    import time

    from helpers.tools import REPO
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, *map(str, args)],
                               cwd=REPO,
                               stdin=slave,
                               stdout=slave,
                               stderr=slave,
                               env=dict(os.environ, TERM='xterm'))
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # Linux: EIO once the child has gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.wait(), b''.join(chunks).decode(errors='replace')


@pytest.mark.slow
def test_a_crash_in_training_leaves_the_terminal_usable(tmp_path, shapes_root):
    """A label file that breaks mid-run: the live bar is stopped before the
    error, and the cursor that rich hid is shown again. A bad data file is
    one line (no traceback) naming it."""
    root = tmp_path / 'shapes'
    shutil.copytree(shapes_root, root)
    broken = sorted((root / 'annotations' / 'training').glob('*.png'))[3]
    broken.write_bytes(broken.read_bytes()[:60])
    config = write_config(tmp_path / 'tiny.py', root)
    status, console = run_in_terminal('tools/train.py', config, '--work-dir',
                                      tmp_path / 'work')
    assert status != 0
    hide, show = '\x1b[?25l', '\x1b[?25h'
    assert hide in console, console[-3000:]  # the bar was drawn live ...
    after_bar = console.rsplit(hide, 1)[1]
    assert show in after_bar, console[-3000:]  # ... and stopped
    # The error comes after the bar, as one line naming the file.
    error = after_bar.split(show, 1)[1]
    assert 'Traceback (most recent call last)' not in error
    assert f'Error: Cannot read the label map {broken}' in error


def test_quiet_console_for_tools_without_a_runner(capsys):
    """tools/inference.py and tools/export_onnx.py: mmengine's INFO lines
    (e.g. each checkpoint file read) hidden, its warnings and the lines
    users act on shown; --verbose leaves the console alone."""
    import logging

    from mmengine.logging import MMLogger, print_log

    from dinov2_seg.engine.console import quiet_console

    def shown(message, level=logging.INFO):
        print_log(message, logger='current', level=level)
        return message in capsys.readouterr().out

    MMLogger.get_instance('verbose_tool', log_level='INFO')
    quiet_console(verbose=True)
    assert shown('Loads checkpoint by local backend from path: h.pth')
    logger = MMLogger.get_instance('quiet_tool', log_level='INFO')
    quiet_console()
    try:
        assert not shown('Loads checkpoint by local backend from path: h.pth')
        assert shown('Load checkpoint from work_dirs/run/iter_8.pth')
        assert shown('that file holds 150 classes', logging.WARNING)
    finally:  # later tests in this process see mmengine's INFO lines again
        for handler in logger.handlers:
            for console_filter in handler.filters[:]:
                handler.removeFilter(console_filter)
