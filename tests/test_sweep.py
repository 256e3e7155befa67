"""tools/sweep.py and tools/compare_runs.py on the shapes data: a real 2 x 2
grid x 2 seeds sweep (8 runs, each trained then tested), a run killed and
resumed, a run preempted and requeued by submitit, the Slurm script, and
the comparison table read against each run's own result files."""
import csv
import glob
import json
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture(scope='module')
def env(tmp_path_factory, shapes_root):
    """The base config (the test fork of the demo: tiny ViT, 6 iterations,
    a checkpoint and a validation every 3, and the hook that sends a
    signal after iteration 5 when its flag file exists), and the 2 x 2 x 2
    sweep run once for the module."""
    root = tmp_path_factory.mktemp('sweeps')
    flag = root / 'signal_at_iter_5'
    config = write_config(
        root / 'fork.py', shapes_root, f"""
custom_imports = dict(imports=['dinov2_seg.models', 'dinov2_seg.datasets',
    'dinov2_seg.evaluation', 'dinov2_seg.engine', 'helpers.sweep_hooks'],
    allow_failed_imports=False)
custom_hooks = [dict(type='FrozenBackboneCheckpointHook'),
                dict(type='SignalAtIterHook', at=5, flag={str(flag)!r})]
train_cfg = dict(max_iters=6, val_interval=3)
""")
    # The runs' processes import the hook from tests/helpers.
    saved = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [str(REPO), str(REPO / 'tests')] + ([saved] if saved else []))
    status = sweep_tool.main([
        str(config), *GRID, '--seeds', '0,1', '--name', 'grid', '--root',
        str(root), '--max-parallel', '2'
    ])
    yield dict(root=root, config=config, flag=flag, status=status)
    if saved is None:
        del os.environ['PYTHONPATH']
    else:
        os.environ['PYTHONPATH'] = saved


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
                found.append(data)
    assert len(found) == 1, (work_dir, found)
    return found[0]


test_metric_files.__test__ = False  # a helper, not a test


def test_sweep_runs_grid_and_table_matches_run_files(env, tmp_path):
    assert env['status'] == 0
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
    assert result['keys'] == [LR, DROPOUT]
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
            test_metric_files(sweep_dir /
                              f'lr-{key[0]}_dropout_ratio-{key[1]}_seed-{s}')
            ['mIoU'] for s in (0, 1)
        ])
        b = np.array([
            test_metric_files(sweep_dir / f'lr-0.001_dropout_ratio-0_seed-{s}')
            ['mIoU'] for s in (0, 1)
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
        assert list(run.per_class_iou) == [
            'sky', 'ground', 'disc', 'box', 'triangle'
        ]
        present = [v for v in run.per_class_iou.values() if not math.isnan(v)]
        assert np.mean(present) == pytest.approx(run.test['mIoU'], abs=0.01)
    assert result['class_deltas'].shape == (4, 5)
    assert np.all(result['class_deltas'][0] == 0)
    # One bar per variant, at the table's means.
    assert [h for _, h, _ in result['bars']] == pytest.approx(
        [r['mIoU'] for r in result['rows']])
    for name in ('bars', 'curves', 'class_deltas'):
        assert Path(result['files'][name]).stat().st_size > 1000
    assert set(result['curves'][result['variants'][0].label]) == {
        'loss', 'mIoU'
    }
    steps, _, _ = result['curves'][result['variants'][0].label]['mIoU']
    assert list(steps) == [3, 6]
    with open(result['files']['csv']) as file:
        written = list(csv.DictReader(file))
    assert [float(r['mIoU']) for r in written] == pytest.approx(
        [r['mIoU'] for r in result['rows']])
    assert result['table'] in (out / 'compare.md').read_text()


def test_killed_run_resumes_and_matches_uninterrupted(env, capsys):
    """SIGKILL after iteration 5 of the first run (a checkpoint at 3): the
    re-run skips the finished run and resumes the killed one from iter_3;
    the results equal the uninterrupted sweep's same runs."""
    args = [
        str(env['config']), '--set', f'{LR}=0.001', '--seeds', '0,1',
        '--name', 'killed', '--root',
        str(env['root'])
    ]
    env['flag'].write_text('SIGKILL')
    assert sweep_tool.main(args) == 1
    killed = env['root'] / 'killed' / 'lr-0.001_seed-0'
    record = json.loads((killed / 'sweep_run.json').read_text())
    assert record['state'] == 'pending'
    assert record['error'].startswith('killed by SIGKILL')
    assert (killed / 'iter_3.pth').is_file()
    assert not (killed / 'iter_6.pth').exists()
    capsys.readouterr()

    assert sweep_tool.main(args) == 0
    output = capsys.readouterr().out
    assert 'lr-0.001_seed-1: skipped (done)' in output
    record = json.loads((killed / 'sweep_run.json').read_text())
    assert record['state'] == 'done'
    assert record['resumed_from'] == str(killed / 'iter_3.pth')
    finished = env['root'] / 'killed' / 'lr-0.001_seed-1'
    assert 'resumed_from' not in json.loads(
        (finished / 'sweep_run.json').read_text()) or json.loads(
            (finished / 'sweep_run.json').read_text())['resumed_from'] is None

    grid = env['root'] / 'grid'
    for seed in (0, 1):
        assert test_metric_files(
            env['root'] / 'killed' /
            f'lr-0.001_seed-{seed}') == test_metric_files(
                grid / f'lr-0.001_dropout_ratio-0_seed-{seed}')
    resumed = compare_tool.main(
        [str(env['root'] / 'killed'), '--out',
         str(env['root'] / 'c1')])['rows'][0]
    uninterrupted = compare_tool.main([
        str(grid / f'lr-0.001_dropout_ratio-0_seed-{s}') for s in (0, 1)
    ] + ['--out', str(env['root'] / 'c2')])['rows'][0]
    for key in ('mIoU', 'mIoU_std', 'mAcc', 'mAcc_std', 'aAcc', 'aAcc_std',
                'best_mIoU', 'best_mIoU_std', 'seeds', 'iterations'):
        assert resumed[key] == uninterrupted[key], key


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
            str(env['config']), {LR: [0.001]}, [0],
            name='preempted',
            root=str(env['root'])))
    save(manifest)
    prepare_runs(manifest, manifest['runs'])
    executor = LocalExecutor(str(env['root'] / 'preempted' / 'submitit'))
    executor.update_parameters(timeout_min=10)
    env['flag'].write_text('SIGUSR2')
    (job, ) = submit_runs(executor, manifest['runs'],
                          lambda run: SweepRun(run['work_dir']))
    metrics = job.result()
    work_dir = Path(manifest['runs'][0]['work_dir'])
    record = json.loads((work_dir / 'sweep_run.json').read_text())
    assert record['state'] == 'done'
    assert record['slurm_job_id'] == job.job_id
    assert record['resumed_from'] == str(work_dir / 'iter_3.pth')
    assert not env['flag'].exists()
    assert 'Requeued job' in Path(job.paths.stderr).read_text()
    reference = test_metric_files(env['root'] / 'grid' /
                                  'lr-0.001_dropout_ratio-0_seed-0')
    assert metrics == pytest.approx(reference)


def test_slurm_submission_script(env, tmp_path, monkeypatch, capsys):
    """The sbatch file submitit's SlurmExecutor writes for the sweep (a job
    array): submitted through a stand-in ``sbatch`` that keeps the file
    (Slurm is not on this machine), and the same file printed by
    --dry-run."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    kept = tmp_path / 'submitted.sh'
    for name, body in (('sbatch', f'cp "$1" {kept}\n'
                        'echo "Submitted batch job 4242"\n'),
                       ('srun', 'exit 1\n')):
        path = bin_dir / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    args = [
        str(env['config']), *GRID, '--seeds', '0,1', '--name', 'slurm',
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
        json.loads((Path(r['work_dir']) / 'sweep_run.json').read_text())
        ['slurm_job_id'] for r in manifest['runs']
    ] == [f'4242_{i}' for i in range(8)]


def test_dry_run_runs_nothing(env, tmp_path, capsys):
    assert sweep_tool.main([
        str(env['config']), *GRID, '--seeds', '0,1', '--name', 'dry',
        '--root',
        str(tmp_path), '--dry-run'
    ]) == 0
    output = capsys.readouterr().out
    assert output.count('python tools/train.py') == 8
    assert output.count('python tools/test.py') == 8
    assert 'lr-0.01_dropout_ratio-0.1_seed-1' in output
    assert not (tmp_path / 'dry').exists()


def test_changed_base_config_or_grid_is_refused(env, tmp_path):
    config = tmp_path / 'fork.py'
    shutil.copy(env['config'], config)
    args = [str(config), '--set', f'{LR}=0.001', '--root', str(tmp_path)]
    save(
        open_sweep(
            build_manifest(str(config), {LR: [0.001]}, [0],
                           root=str(tmp_path))))
    with open(config, 'a') as file:
        file.write('\ntrain_cfg = dict(max_iters=8)\n')
    with pytest.raises(ValueError, match=r'the base config changed '
                       r'\(train_cfg.max_iters: 6 -> 8\)'):
        sweep_tool.main(args)
    with pytest.raises(ValueError, match=r"grid changed: .*0.001.*0.01"):
        sweep_tool.main(
            [str(config), '--set', f'{LR}=0.001,0.01', '--root',
             str(tmp_path), '--dry-run'][:-1] + ['--seeds', '0'])
    # --new keeps the old sweep aside and starts this one.
    manifest = open_sweep(
        build_manifest(str(config), {LR: [0.001]}, [0], root=str(tmp_path)),
        new=True)
    assert manifest['runs'][0]['state'] == 'pending'
    assert len(list(tmp_path.glob('fork.old-*/sweep.json'))) == 1


def test_compare_plain_work_dirs(env, tmp_path):
    """Runs of tools/train.py and tools/test.py (no sweep): two learning
    rates, one seed each; the variants come from their configs."""
    checkpoints = {}
    for lr in ('0.001', '0.01'):
        work_dir = str(tmp_path / f'run_{lr}')
        train_tool.main([
            str(env['config']), '--work-dir', work_dir, '--cfg-options',
            f'{LR}={lr}'
        ])
        checkpoints[lr] = os.path.join(work_dir, 'iter_6.pth')
        test_tool.main(
            [str(env['config']), checkpoints[lr], '--work-dir', work_dir])
    result = compare_tool.main([
        str(tmp_path / 'run_0.001'),
        str(tmp_path / 'run_0.01'), '--baseline', 'run_0.01', '--out',
        str(tmp_path / 'out')
    ])
    assert result['keys'] == [LR]
    assert [r[LR] for r in result['rows']] == ['0.001', '0.01']
    assert result['baseline'] == 1
    files = {lr: test_metric_files(tmp_path / f'run_{lr}') for lr in checkpoints}
    rows = result['rows']
    assert rows[0]['mIoU'] == pytest.approx(files['0.001']['mIoU'])
    assert rows[0]['delta'] == pytest.approx(files['0.001']['mIoU'] -
                                             files['0.01']['mIoU'])
    # One seed: no std and no test.
    assert math.isnan(rows[0]['mIoU_std']) and rows[0]['mark'] == '?'
    assert rows[0]['params'] == rows[1]['params'] > 0
