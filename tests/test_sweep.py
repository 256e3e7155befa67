"""tools/sweep.py and tools/compare_runs.py on the shapes data: a real 2 x 2
grid x 2 seeds sweep (8 runs, each trained then tested), a run killed and
resumed, a run preempted and requeued by submitit, the Slurm script, and
the comparison table read against each run's own result files."""
import contextlib
import csv
import glob
import io
import json
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers.archs import TINY_ARCH
from helpers.tools import REPO, write_config
from scipy import stats

from dinov2_seg.cli import compare_runs as compare_tool
from dinov2_seg.cli import sweep as sweep_tool
from dinov2_seg.cli import test as test_tool
from dinov2_seg.cli import train as train_tool
from dinov2_seg.sweep.plan import (build_manifest, open_sweep, prepare_runs,
                                   save)

# Training runs in subprocesses.
pytestmark = pytest.mark.slow

LR = 'optim_wrapper.optimizer.lr'
DROPOUT = 'model.decode_head.dropout_ratio'
GRID = ['--set', f'{LR}=0.001,0.01', '--set', f'{DROPOUT}=0,0.1']

KILLED = 'lr-0.001_dropout_ratio-0_seed-0'


@pytest.fixture(scope='module')
def base(tmp_path_factory, shapes_root):
    """The base config: the test fork of the demo (tiny ViT, 6 iterations,
    a checkpoint every 3) with a hook that sends a signal after iteration
    5 when its flag file names the run."""
    root = tmp_path_factory.mktemp('sweeps')
    flag = root / 'signal_at_iter_5'
    config = write_config(
        root / 'fork.py', shapes_root, f"""
custom_imports = dict(imports=['dinov2_seg.models', 'dinov2_seg.datasets',
    'dinov2_seg.evaluation', 'dinov2_seg.engine', 'helpers.sweep_hooks'],
    allow_failed_imports=False)
custom_hooks = [dict(type='FrozenBackboneCheckpointHook'),
                dict(type='SignalAtIterHook', at=5, flag={str(flag)!r})]
# 56-pixel crops (4 x 4 patches): the runs cost little beyond their set-up.
crop_size = (56, 56)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='DinoLoadAnnotations'),
    dict(type='RandomResize', scale=(112, 56), ratio_range=(0.75, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(112, 56), keep_ratio=True),
    dict(type='DinoLoadAnnotations'), dict(type='PackSegInputs')]
data = dict(data_root=data_root, pipeline=test_pipeline)
train_dataloader = dict(
    loader, batch_size=2, dataset=dict(data, pipeline=train_pipeline))
val_dataloader = dict(loader, dataset=data)
test_dataloader = val_dataloader
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH!r})),
    decode_head=dict(in_channels=[{TINY_ARCH['embed_dim']}]),
    test_cfg=dict(crop_size=crop_size, stride=(42, 42)))
""")
    return dict(root=root, config=config, flag=flag)


@pytest.fixture(scope='module')
def env(base):
    """The 2 x 2 x 2 sweep, run once for the module: the first invocation
    with run KILLED killed by SIGKILL after iteration 5, then the same
    command again."""
    root, config, flag = base['root'], base['config'], base['flag']
    # The runs' processes import the hook from tests/helpers.
    saved = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [str(REPO), str(REPO / 'tests')] + ([saved] if saved else []))
    args = [
        str(config), *GRID, '--seeds', '0,1', '--name', 'grid', '--root',
        str(root), '--max-parallel', '2'
    ]
    flag.write_text(f'SIGKILL {KILLED}')
    outputs, statuses, records = [], [], []
    for _ in range(2):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            statuses.append(sweep_tool.main(args))
        outputs.append(out.getvalue())
        records.append(
            json.loads(
                (root / 'grid' / KILLED / 'sweep_run.json').read_text()))
    yield dict(
        root=root,
        config=config,
        flag=flag,
        statuses=statuses,
        outputs=outputs,
        killed_records=records)
    if saved is None:
        del os.environ['PYTHONPATH']
    else:
        os.environ['PYTHONPATH'] = saved


@pytest.fixture(scope='module')
def plain_runs(base, tmp_path_factory):
    """Two runs of tools/train.py and tools/test.py (in this process, no
    sweep): learning rates 0.001 and 0.01, seed 0, no interruption."""
    folder = tmp_path_factory.mktemp('plain')
    for lr in ('0.001', '0.01'):
        work_dir = str(folder / f'run_{lr}')
        train_tool.main([
            str(base['config']), '--work-dir', work_dir, '--cfg-options',
            f'{LR}={lr}'
        ])
        test_tool.main([
            str(base['config']),
            os.path.join(work_dir, 'iter_6.pth'), '--work-dir', work_dir
        ])
    return folder


def test_metric_files(work_dir) -> dict:
    """The metrics tools/test.py wrote (TIMESTAMP/TIMESTAMP.json), read
    here without the package."""
    found = []
    for path in glob.glob(os.path.join(work_dir, '*', '*.json')):
        folder = os.path.basename(os.path.dirname(path))
        if os.path.basename(path) == folder + '.json':
            with open(path) as file:
                data = json.load(file)
            if 'mIoU' in data:
                found.append({k: data[k] for k in ('aAcc', 'mIoU', 'mAcc')})
    assert len(found) == 1, (work_dir, found)
    return found[0]


test_metric_files.__test__ = False  # a helper, not a test


def test_sweep_runs_grid_and_table_matches_run_files(env, tmp_path):
    assert env['statuses'] == [1, 0]
    sweep_dir = env['root'] / 'grid'
    manifest = json.loads((sweep_dir / 'sweep.json').read_text())
    assert [r['name'] for r in manifest['runs']] == [
        f'lr-{lr}_dropout_ratio-{d}_seed-{s}' for lr in ('0.001', '0.01')
        for d in ('0', '0.1') for s in (0, 1)
    ]
    assert {r['state'] for r in manifest['runs']} == {'done'}
    assert manifest['base_config'] == str(env['config'])
    assert manifest['runs'][0]['commands'][0].startswith(
        f"python tools/train.py {env['config']} --work-dir "
        f"{sweep_dir / manifest['runs'][0]['name']} --cfg-options {LR}=0.001 "
        f'{DROPOUT}=0 randomness.seed=0')

    out = tmp_path / 'compare'
    result = compare_tool.main([str(sweep_dir), '--out', str(out)])
    # Columns: the two swept settings (found in the dumped configs).
    assert result['keys'] == [DROPOUT, LR]  # the config's order
    rows = {(r[LR], r[DROPOUT]): r for r in result['rows']}
    assert sorted(rows) == [('0.001', '0'), ('0.001', '0.1'), ('0.01', '0'),
                            ('0.01', '0.1')]
    for run in manifest['runs']:
        assert run['results'] == test_metric_files(run['work_dir'])
    for (lr, dropout), row in rows.items():
        files = [
            test_metric_files(sweep_dir /
                              f'lr-{lr}_dropout_ratio-{dropout}_seed-{s}')
            for s in (0, 1)
        ]
        assert row['seeds'] == 2 and row['iterations'] == 6
        for metric in ('mIoU', 'mAcc', 'aAcc'):
            values = [f[metric] for f in files]
            assert row[metric] == pytest.approx(np.mean(values))
            assert row[f'{metric}_std'] == pytest.approx(
                math.sqrt((values[0] - values[1])**2 / 2))
    base = rows[('0.001', '0')]
    assert base['mark'] == 'baseline'
    for key, row in rows.items():
        if row is base:
            continue
        # Welch's t-test from its formula.
        a = np.array([
            test_metric_files(
                sweep_dir /
                f'lr-{key[0]}_dropout_ratio-{key[1]}_seed-{s}')['mIoU']
            for s in (0, 1)
        ])
        b = np.array([
            test_metric_files(sweep_dir /
                              f'lr-0.001_dropout_ratio-0_seed-{s}')['mIoU']
            for s in (0, 1)
        ])
        assert row['delta'] == pytest.approx(a.mean() - b.mean())
        va, vb = a.var(ddof=1) / 2, b.var(ddof=1) / 2
        if va + vb > 0:
            t = (a.mean() - b.mean()) / math.sqrt(va + vb)
            df = (va + vb)**2 / (va**2 + vb**2)
            assert row['p'] == pytest.approx(2 * stats.t.sf(abs(t), df))
            assert row['mark'] == ('*' if row['p'] < 0.05 else '~')
    # Per-class IoU from each test's log: their mean is the run's mIoU.
    variant = result['variants'][0]
    for run in variant.runs:
        assert list(
            run.per_class_iou) == ['sky', 'ground', 'disc', 'box', 'triangle']
        present = [v for v in run.per_class_iou.values() if not math.isnan(v)]
        assert np.mean(present) == pytest.approx(run.test['mIoU'], abs=0.01)
    assert result['class_deltas'].shape == (4, 5)
    assert np.all(result['class_deltas'][0] == 0)
    # One bar per variant, at the table's means.
    assert [h for _, h, _ in result['bars']
            ] == pytest.approx([r['mIoU'] for r in result['rows']])
    for name in ('bars', 'curves', 'class_deltas'):
        assert Path(result['files'][name]).stat().st_size > 1000
    assert set(
        result['curves'][result['variants'][0].label]) == {'loss', 'mIoU'}
    steps, _, _ = result['curves'][result['variants'][0].label]['mIoU']
    assert list(steps) == [6]
    steps, mean, std = result['curves'][result['variants'][0].label]['loss']
    assert list(steps) == [1, 2, 3, 4, 5, 6]
    with open(result['files']['csv']) as file:
        written = list(csv.DictReader(file))
    assert [float(r['mIoU']) for r in written
            ] == pytest.approx([r['mIoU'] for r in result['rows']])
    assert result['table'] in (out / 'compare.md').read_text()


def test_killed_run_resumes_and_matches_uninterrupted(env, plain_runs):
    """Run KILLED got SIGKILL after iteration 5 (its checkpoint: 3): the
    first invocation finished the 7 others; the second skipped them and
    resumed it from iter_3. Its results equal those of the same config and
    seed trained without interruption (a plain run here), so the table,
    made from the runs' result files, is the uninterrupted one."""
    first, second = env['killed_records']
    assert first['state'] == 'pending'
    assert first['error'].startswith('killed by SIGKILL')
    assert 'results' not in first
    assert f'{KILLED}  pending' in env['outputs'][0]
    assert env['outputs'][1].count('skipped (done)') == 7
    assert f'{KILLED}: skipped' not in env['outputs'][1]
    assert 'Sweep grid: 1 to run, 7 done' in env['outputs'][1]
    killed = env['root'] / 'grid' / KILLED
    assert second['state'] == 'done'
    assert second['resumed_from'] == str(killed / 'iter_3.pth')
    # Two training sessions (the second resumed), one test.
    assert len(list(killed.glob('*/vis_data/scalars.json'))) == 2
    logs = [p.read_text() for p in killed.glob('*/*.log')]
    assert sum('resumed epoch: 0, iter: 3' in text for text in logs) == 1
    assert test_metric_files(killed) == test_metric_files(plain_runs /
                                                          'run_0.001')


def test_submitit_local_executor_requeues_preempted_run(env):
    """submitit's local executor (the submission, pickling, signal and
    result path of Slurm): USR2 after iteration 5, as Slurm sends before a
    preemption; the run is checkpointed, requeued and resumed from
    iter_3, and ends with the uninterrupted run's metrics."""
    from submitit import LocalExecutor

    from dinov2_seg.cli.sweep_run import SweepRun
    from dinov2_seg.sweep.slurm import submit_runs
    manifest = open_sweep(
        build_manifest(
            str(env['config']), {LR: [0.01]}, [0],
            name='preempted',
            root=str(env['root'])))
    save(manifest)
    prepare_runs(manifest, manifest['runs'])
    executor = LocalExecutor(str(env['root'] / 'preempted' / 'submitit'))
    executor.update_parameters(timeout_min=10)
    env['flag'].write_text('SIGUSR2')  # any run
    (job, ) = submit_runs(executor, manifest['runs'],
                          lambda run: SweepRun(run['work_dir']))
    metrics = job.result()
    work_dir = Path(manifest['runs'][0]['work_dir'])
    record = json.loads((work_dir / 'sweep_run.json').read_text())
    assert record['state'] == 'done'
    assert record['slurm_job_id'] == job.job_id
    assert record['resumed_from'] == str(work_dir / 'iter_3.pth')
    assert not env['flag'].exists()
    assert record['requeues'] == 1  # counted by SweepRun.checkpoint
    reference = test_metric_files(env['root'] / 'grid' /
                                  'lr-0.01_dropout_ratio-0_seed-0')
    assert metrics == pytest.approx(reference)


def test_slurm_submission_script(base, tmp_path, monkeypatch, capsys):
    """The sbatch file submitit's SlurmExecutor writes for the sweep (a job
    array): submitted through a stand-in ``sbatch`` that keeps the file
    (Slurm is not on this machine), and the same file printed by
    --dry-run."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    kept = tmp_path / 'submitted.sh'
    for name, body in (('sbatch', f'cp "$1" {kept}\n'
                        'echo "Submitted batch job 4242"\n'), ('srun',
                                                               'exit 1\n')):
        path = bin_dir / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = [
        str(base['config']), *GRID, '--seeds', '0,1', '--name', 'slurm',
        '--root',
        str(tmp_path), '--launcher', 'slurm', '--gpus-per-run', '2',
        '--partition', 'learnlab', '--time', '120', '--max-parallel', '3',
        '--slurm-args', '--account=vision --exclusive'
    ]
    assert sweep_tool.main(args + ['--dry-run']) == 0
    printed = capsys.readouterr().out
    assert sweep_tool.main(args) == 0
    script = kept.read_text()
    lines = script.splitlines()
    for line in ('#SBATCH --array=0-7%3', '#SBATCH --gpus-per-node=2',
                 '#SBATCH --ntasks-per-node=2', '#SBATCH --time=120',
                 '#SBATCH --partition=learnlab', '#SBATCH --account=vision',
                 '#SBATCH --exclusive', '#SBATCH --signal=USR2@90',
                 '#SBATCH --job-name=slurm'):
        assert line in lines, script
    folder = tmp_path / 'slurm' / 'slurm'
    assert lines[-1].startswith('srun --unbuffered --output ')
    assert lines[-1].endswith(f' -u -m submitit.core._submit {folder}')
    assert script in printed
    manifest = json.loads((tmp_path / 'slurm' / 'sweep.json').read_text())
    assert [
        json.loads((Path(r['work_dir']) /
                    'sweep_run.json').read_text())['slurm_job_id']
        for r in manifest['runs']
    ] == [f'4242_{i}' for i in range(8)]


def test_dry_run_runs_nothing(base, tmp_path, capsys):
    assert sweep_tool.main([
        str(base['config']), *GRID, '--seeds', '0,1', '--name', 'dry',
        '--root',
        str(tmp_path), '--dry-run'
    ]) == 0
    output = capsys.readouterr().out
    assert output.count('python tools/train.py') == 8
    assert output.count('python tools/test.py') == 8
    assert 'lr-0.01_dropout_ratio-0.1_seed-1' in output
    assert not (tmp_path / 'dry').exists()


def test_changed_base_config_or_grid_is_refused(base, tmp_path):
    config = tmp_path / 'fork.py'
    shutil.copy(base['config'], config)
    args = [str(config), '--set', f'{LR}=0.001', '--root', str(tmp_path)]
    save(
        open_sweep(
            build_manifest(
                str(config), {LR: [0.001]}, [0], root=str(tmp_path))))
    with open(config, 'a') as file:
        file.write('\ntrain_cfg = dict(max_iters=8, val_interval=6)\n')
    with pytest.raises(
            ValueError,
            match=r'the base config changed '
            r'\(train_cfg.max_iters: 6 -> 8\)'):
        sweep_tool.main(args)
    with pytest.raises(ValueError, match=r"grid changed: .*0.001.*0.01"):
        sweep_tool.main([
            str(config), '--set', f'{LR}=0.001,0.01', '--root',
            str(tmp_path), '--dry-run'
        ][:-1] + ['--seeds', '0'])
    # --new keeps the old sweep aside and starts this one.
    manifest = open_sweep(
        build_manifest(str(config), {LR: [0.001]}, [0], root=str(tmp_path)),
        new=True)
    assert manifest['runs'][0]['state'] == 'pending'
    assert len(list(tmp_path.glob('fork.old-*/sweep.json'))) == 1


def test_compare_plain_work_dirs(plain_runs, tmp_path):
    """Work dirs of tools/train.py and tools/test.py (no sweep): two
    learning rates, one seed each; the variant comes from their configs."""
    result = compare_tool.main([
        str(plain_runs / 'run_0.001'),
        str(plain_runs / 'run_0.01'), '--baseline', 'run_0.01', '--out',
        str(tmp_path / 'out')
    ])
    assert result['keys'] == [LR]
    assert [r[LR] for r in result['rows']] == ['0.001', '0.01']
    assert result['baseline'] == 1
    files = {
        lr: test_metric_files(plain_runs / f'run_{lr}')
        for lr in ('0.001', '0.01')
    }
    rows = result['rows']
    for row, lr in zip(rows, ('0.001', '0.01')):
        for metric in ('mIoU', 'mAcc', 'aAcc'):
            assert row[metric] == files[lr][metric]
    assert rows[0]['delta'] == pytest.approx(files['0.001']['mIoU'] -
                                             files['0.01']['mIoU'])
    # One seed: no std and no test.
    assert math.isnan(rows[0]['mIoU_std']) and rows[0]['mark'] == '?'
    # Counted on the model built from the dumped config: the frozen ViT
    # has none; the head's BatchNorm 2 x 48 and its 1x1 conv 48 x 5 + 5.
    assert rows[0]['params'] == rows[1]['params'] == 2 * 48 + 48 * 5 + 5
