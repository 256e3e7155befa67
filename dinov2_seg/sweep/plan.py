"""What a sweep is and what is left to run: its manifest, built from the
base config, the grid and the seeds, then compared with the one on disk;
finished runs are skipped, killed runs resumed, failed runs retried once."""
import datetime
import os
import os.path as osp
import shlex
import shutil
import socket
import subprocess
from typing import Any, Dict, List, Optional, Sequence

from .grid import SEED_KEY, expand_runs, format_value
from .manifest import (DONE, FAILED, MANIFEST, PENDING, RUNNING,
                       config_fingerprint, read_json, refuse_changed_sweep,
                       run_file, update_run_file, write_json)

SWEEPS_ROOT = osp.join('work_dirs', 'sweeps')
# A failed run is run again once by the next invocation; --retry-failed
# runs it whatever its count.
AUTO_RETRIES = 1


def run_commands(config: str, work_dir: str, cfg_options: List[str],
                 test_args: List[str]) -> List[str]:
    """The run as two tool commands (what the worker does in one
    interpreter), for the manifest, --dry-run and by-hand re-runs."""
    train = shlex.join([
        'python', 'tools/train.py', config, '--work-dir', work_dir,
        '--cfg-options', *cfg_options
    ])
    checkpoint = osp.join(work_dir, 'last_checkpoint')
    test = ' '.join([
        shlex.join(['python', 'tools/test.py', config]),
        f'"$(cat {shlex.quote(checkpoint)})"',
        shlex.join(['--work-dir', work_dir, *test_args])
    ])
    return [train + '  # --resume when it has a checkpoint', test]


def build_manifest(config: str,
                   grid: Dict[str, List[Any]],
                   seeds: Sequence[int],
                   name: Optional[str] = None,
                   test_args: Sequence[str] = (),
                   root: str = SWEEPS_ROOT) -> dict:
    """The manifest of this invocation, every run pending."""
    config = osp.abspath(config)
    fingerprint = config_fingerprint(config)
    name = name or osp.splitext(osp.basename(config))[0]
    sweep_dir = osp.abspath(osp.join(root, name))
    runs = []
    for run_name, overrides, seed in expand_runs(grid, seeds):
        work_dir = osp.join(sweep_dir, run_name)
        cfg_options = [f'{k}={format_value(v)}' for k, v in overrides.items()]
        cfg_options.append(f'{SEED_KEY}={seed}')
        runs.append(
            dict(
                name=run_name,
                work_dir=work_dir,
                overrides=overrides,
                seed=seed,
                cfg_options=cfg_options,
                max_iters=_max_iters(fingerprint['settings'], overrides),
                commands=run_commands(config, work_dir, cfg_options,
                                      list(test_args)),
                state=PENDING))
    return dict(
        name=name,
        sweep_dir=sweep_dir,
        base_config=config,
        base_config_hash=fingerprint['hash'],
        base_config_settings=fingerprint['settings'],
        grid=grid,
        seeds=list(seeds),
        test_args=list(test_args),
        runs=runs)


def _max_iters(settings: Dict[str, str], overrides: Dict[str, Any]):
    if 'train_cfg.max_iters' in overrides:
        return overrides['train_cfg.max_iters']
    value = settings.get('train_cfg.max_iters')
    return int(value) if value and value.isdigit() else None


def open_sweep(manifest: dict, new: bool = False) -> dict:
    """Check ``manifest`` against the sweep on disk and return the one to
    use: the recorded one (same sweep; run states read back from the runs)
    or ``manifest`` (first invocation, or ``new``: the old folder is moved
    aside to ``NAME.old-TIME``, nothing is deleted)."""
    sweep_dir = manifest['sweep_dir']
    old = read_json(osp.join(sweep_dir, MANIFEST))
    if old is not None and new:
        stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
        shutil.move(sweep_dir, f'{sweep_dir}.old-{stamp}')
        old = None
    if old is None:
        if osp.isdir(sweep_dir) and os.listdir(sweep_dir):
            raise ValueError(
                f'{sweep_dir} exists without a {MANIFEST}: choose another '
                '--name or remove it')
        return manifest
    refuse_changed_sweep(old, manifest, sweep_dir)
    return refresh(old)


def refresh(manifest: dict) -> dict:
    """Read each run's state, error and results from its run file."""
    for run in manifest['runs']:
        record = read_json(run_file(run['work_dir'])) or {}
        for field in ('state', 'error', 'results', 'failures', 'iteration'):
            if field in record:
                run[field] = record[field]
    return manifest


def save(manifest: dict) -> None:
    write_json(osp.join(manifest['sweep_dir'], MANIFEST), manifest)


def _alive_here(record: dict) -> bool:
    """Whether a run recorded as running is still running: its process on
    this host, or its Slurm job still in the queue."""
    job = record.get('slurm_job_id')
    if job and shutil.which('squeue'):
        queued = subprocess.run(
            ['squeue', '-h', '-j', str(job)], capture_output=True, text=True)
        return bool(queued.stdout.strip())
    if record.get('host') != socket.gethostname() or not record.get('pid'):
        return False
    try:
        os.kill(record['pid'], 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def runs_to_launch(manifest: dict,
                   retry_failed: bool = False) -> Dict[str, List[dict]]:
    """The runs by what this invocation does with them: ``run`` (pending,
    killed or preempted: they resume from their last checkpoint; failed
    once, or any failed run with ``retry_failed``), ``skip_done``,
    ``skip_running`` (still running elsewhere) and ``skip_failed``."""
    plan: Dict[str, List[dict]] = dict(
        run=[], skip_done=[], skip_running=[], skip_failed=[])
    for run in manifest['runs']:
        record = read_json(run_file(run['work_dir'])) or {}
        state = record.get('state', PENDING)
        if state == DONE:
            plan['skip_done'].append(run)
        elif state in (RUNNING, PENDING) and record.get(
                'pid', record.get('slurm_job_id')) and _alive_here(record):
            plan['skip_running'].append(run)
        elif state == FAILED and not retry_failed and record.get(
                'failures', 1) > AUTO_RETRIES:
            plan['skip_failed'].append(run)
        else:
            plan['run'].append(run)
    return plan


def prepare_runs(manifest: dict, runs: List[dict]) -> None:
    """Write what each run's worker reads (``dinov2_seg.cli.sweep_run``)
    into its run file, the run pending; its counts (failures, trained)
    stay."""
    for run in runs:
        os.makedirs(run['work_dir'], exist_ok=True)
        update_run_file(
            run['work_dir'],
            name=run['name'],
            config=manifest['base_config'],
            cfg_options=run['cfg_options'],
            test_args=manifest['test_args'],
            state=PENDING)
