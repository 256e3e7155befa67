"""``tools/sweep.py``: a grid of config overrides times seeds, each run
trained then tested in its own work dir under ``work_dirs/sweeps/NAME``,
recorded in ``sweep.json``; re-running the same command skips finished
runs, resumes killed ones and retries failed ones once."""
import argparse
import os.path as osp
import shlex
from typing import List, Optional

from dinov2_seg.sweep.grid import parse_grid, parse_seeds
from dinov2_seg.sweep.local import launch_local
from dinov2_seg.sweep.manifest import PENDING, read_json, run_file
from dinov2_seg.sweep.plan import (SWEEPS_ROOT, build_manifest, open_sweep,
                                   prepare_runs, refresh, runs_to_launch, save)
from dinov2_seg.sweep.progress import progress_line
from dinov2_seg.sweep.slurm import (SUBMITIT_FOLDER, sbatch_script,
                                    slurm_executor, slurm_parameters,
                                    submit_runs)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Sweep config overrides x seeds: train then test each '
        'run, resumable')
    parser.add_argument('config', help='base config file')
    parser.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='KEY=V1,V2',
        help='a config key and its values (repeat for a grid), e.g. '
        'optim_wrapper.optimizer.lr=0.001,0.0003')
    parser.add_argument(
        '--seeds', default='0', help='randomness.seed values (default: 0)')
    parser.add_argument('--name', help='sweep name (default: the config name)')
    parser.add_argument(
        '--root',
        default=SWEEPS_ROOT,
        help='where sweeps go (default: %(default)s)')
    parser.add_argument(
        '--test-args',
        default='',
        help='flags for tools/test.py, e.g. "--tta" (one string)')
    parser.add_argument(
        '--launcher', choices=['local', 'slurm'], default='local')
    parser.add_argument(
        '--max-parallel',
        type=int,
        help='runs at a time (default: 1 on this machine, all on Slurm: '
        'array tasks running at once)')
    parser.add_argument(
        '--gpus-per-run',
        type=int,
        help='GPUs per run (default: 1 where there are GPUs, else 0)')
    parser.add_argument('--partition', help='Slurm partition')
    parser.add_argument(
        '--time', type=int, default=60, help='Slurm time limit (minutes)')
    parser.add_argument(
        '--slurm-args',
        help='more sbatch options, e.g. "--account=vision --qos=high"')
    parser.add_argument(
        '--spawn',
        action='store_true',
        help='local runs in new interpreters (python -m '
        'dinov2_seg.cli.sweep_run) instead of forks of this process, which '
        'has imported torch and mmseg once')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='print the runs and their commands (and the sbatch file) and '
        'run nothing')
    parser.add_argument(
        '--retry-failed',
        action='store_true',
        help='run failed runs again however often they failed (by default '
        'a failed run is retried once)')
    parser.add_argument(
        '--new',
        action='store_true',
        help='start the sweep afresh although its config or grid changed '
        '(the old folder is kept as NAME.old-TIME)')
    return parser.parse_args(argv)


def _parameters(args, manifest: dict) -> dict:
    return slurm_parameters(
        manifest['name'],
        1 if args.gpus_per_run is None else args.gpus_per_run,
        args.partition,
        args.time,
        max_parallel=args.max_parallel or 256,
        slurm_args=args.slurm_args)


def dry_run(args, manifest: dict) -> None:
    print(f"Sweep {manifest['name']} in {manifest['sweep_dir']}: "
          f"{len(manifest['runs'])} runs (dry run: nothing is started)")
    for run in manifest['runs']:
        record = read_json(run_file(run['work_dir'])) or {}
        print(f"\n{run['name']}  [{record.get('state', PENDING)}]")
        for command in run['commands']:
            print(f'  {command}')
    if args.launcher == 'slurm':
        folder = osp.join(manifest['sweep_dir'], SUBMITIT_FOLDER)
        print('\nsbatch file (submitit):')
        print(
            sbatch_script(folder, _parameters(args, manifest),
                          len(manifest['runs'])))


def print_overhead(runs: List[dict]) -> None:
    """The sweep's cost per run beside the run's own work: the run's
    process time minus its training and testing (interpreter start,
    imports, run files, the launcher's polling)."""
    times = []
    for run in runs:
        record = read_json(run_file(run['work_dir'])) or {}
        if all(
                k in record
                for k in ('process_seconds', 'train_seconds', 'test_seconds')):
            times.append((record['process_seconds'], record['train_seconds'],
                          record['test_seconds']))
    if times:
        process, train, test = (sum(t) / len(times) for t in zip(*times))
        overhead = process - train - test
        print(f'[sweep] per run (mean of {len(times)}): training {train:.1f} '
              f's, testing {test:.1f} s, overhead {overhead:.1f} s '
              f'({100 * overhead / train:.1f}% of training: process start, '
              'imports, run files, polling)')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    test_args = shlex.split(args.test_args)
    manifest = build_manifest(args.config, parse_grid(args.set),
                              parse_seeds(args.seeds), args.name, test_args,
                              args.root)
    if args.dry_run:
        dry_run(args, manifest)
        return 0
    manifest = open_sweep(manifest, args.new)
    plan = runs_to_launch(manifest, args.retry_failed)
    for key, why in (('skip_done', 'done'), ('skip_running', 'still running'),
                     ('skip_failed', 'failed twice; --retry-failed runs it')):
        for run in plan[key]:
            print(f"{run['name']}: skipped ({why})")
    prepare_runs(manifest, plan['run'])
    save(manifest)
    print(f"Sweep {manifest['name']}: {len(plan['run'])} to run, "
          f"{len(plan['skip_done'])} done, in {manifest['sweep_dir']}")
    if args.launcher == 'slurm' and plan['run']:
        from .sweep_run import SweepRun
        executor = slurm_executor(manifest['sweep_dir'],
                                  _parameters(args, manifest))
        multi = (args.gpus_per_run or 1) > 1
        jobs = submit_runs(
            executor, plan['run'],
            lambda run: SweepRun(run['work_dir'], 'slurm'
                                 if multi else 'none'))
        save(refresh(manifest))
        print(f'Submitted {len(jobs)} runs as Slurm job '
              f"{jobs[0].job_id.split('_')[0]}; run this command again to "
              'see their states, resume or retry')
        return 0
    from .sweep_run import run_in_worker
    launch_local(
        plan['run'],
        args.max_parallel or 1,
        args.gpus_per_run,
        worker=None if args.spawn else run_in_worker)
    save(refresh(manifest))
    states = [run.get('state') for run in manifest['runs']]
    print(f"[sweep] {states.count('done')}/{len(states)} runs done:")
    for run in manifest['runs']:
        print(f'  {progress_line(run)}')
    print_overhead(plan['run'])
    return 0 if states.count('done') == len(states) else 1
