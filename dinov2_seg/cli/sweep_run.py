"""One run of a sweep: ``tools/train.py`` then ``tools/test.py`` on its
last checkpoint, in one interpreter, keeping the run's ``sweep_run.json``
up to date. ``python -m dinov2_seg.cli.sweep_run WORK_DIR`` (the local
launcher) and :class:`SweepRun` (submitit, on Slurm) both end here, so a
killed, preempted or requeued run resumes the same way: from the last
checkpoint in its work dir."""
import argparse
import os
import os.path as osp
import resource
import sys
import time
from typing import List, Optional

from dinov2_seg.sweep.manifest import (DONE, FAILED, PENDING, RUNNING,
                                       read_json, run_file, update_run_file)
from . import test as test_tool
from . import train as train_tool


def _last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's CheckpointHook named last (the file
    ``--resume`` reads)."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker, encoding='utf-8') as file:
        path = file.read().strip()
    return path if osp.isfile(path) else None


def _peak_memory_mb() -> float:
    """GPU peak (allocated) where training used CUDA, else the process's
    peak resident memory."""
    import torch
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _is_first_task(launcher: str) -> bool:
    """Whether this process keeps the run file: the only one, or the first
    task of a multi-GPU run (known before torch.distributed starts)."""
    variable = 'SLURM_PROCID' if launcher == 'slurm' else 'RANK'
    return int(os.environ.get(variable, '0')) == 0


def run_one(work_dir: str, launcher: str = 'none') -> dict:
    """Train (resuming from the work dir's last checkpoint if it has one,
    skipping training if it finished) then test; return the metrics."""
    spec = read_json(run_file(work_dir))
    if spec is None:
        raise FileNotFoundError(f'{run_file(work_dir)} does not exist; '
                                'tools/sweep.py writes it before a run')

    def note(**fields) -> None:
        if _is_first_task(launcher):
            update_run_file(work_dir, **fields)

    note(state=RUNNING, phase='train', error=None)
    common = ['--launcher', launcher]
    try:
        if not spec.get('trained'):
            checkpoint = _last_checkpoint(work_dir)
            argv = [
                spec['config'], '--work-dir', work_dir, *common,
                '--cfg-options', *spec['cfg_options']
            ]
            if checkpoint:
                argv.insert(3, '--resume')
            started = time.time()
            runner = train_tool.main(argv)
            # mmengine names a run's log folder and its loggers by the
            # second it starts: the test must not share the training's.
            while time.strftime('%Y%m%d_%H%M%S') == runner.timestamp:
                time.sleep(0.05)
            trainable = sum(p.numel() for p in runner.model.parameters()
                            if p.requires_grad)
            note(
                trained=True,
                resumed_from=checkpoint,
                train_seconds=spec.get('train_seconds', 0) + time.time() -
                started,
                trainable_params=trainable)
        note(phase='test')
        test_started = time.time()
        checkpoint = _last_checkpoint(work_dir)
        if checkpoint is None:
            raise FileNotFoundError(
                f'{work_dir} has no last_checkpoint after training: the '
                "config's default_hooks.checkpoint must save one")
        metrics = test_tool.main([
            spec['config'], checkpoint, '--work-dir', work_dir, *common,
            '--cfg-options', *spec['cfg_options'], *spec['test_args']
        ])
    except BaseException as error:  # noqa: B902 (SystemExit from argparse)
        record = read_json(run_file(work_dir)) or {}
        if isinstance(error, KeyboardInterrupt):
            note(state=PENDING, error='interrupted')
        elif record.get('state') != PENDING:  # not requeued (SweepRun)
            last_line = (str(error).strip().splitlines() or [''])[-1]
            note(
                state=FAILED,
                failures=record.get('failures', 0) + 1,
                error=f'{type(error).__name__}: {last_line}')
        raise
    note(
        state=DONE,
        phase='done',
        checkpoint=checkpoint,
        test_seconds=time.time() - test_started,
        results={
            k: float(v)
            for k, v in metrics.items()
        },
        peak_memory_mb=_peak_memory_mb())
    return metrics


try:
    from submitit.helpers import Checkpointable
except ImportError:  # the `sweep` extra is not installed
    Checkpointable = object


class SweepRun(Checkpointable):
    """A run as submitit's job: picklable, and requeued on preemption or
    time-out (submitit's ``checkpoint`` protocol, inherited) to start
    again through :func:`run_one`, which resumes from the last checkpoint.
    ``launcher='slurm'`` when a run spans several GPUs (one task each)."""

    def __init__(self, work_dir: str, launcher: str = 'none'):
        self.work_dir = work_dir
        self.launcher = launcher

    def __call__(self) -> dict:
        return run_one(self.work_dir, self.launcher)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or time-out, before it requeues
        the job: the run is pending again (not failed); the requeued job
        resumes from the last checkpoint in the work dir."""
        record = read_json(run_file(self.work_dir)) or {}
        update_run_file(
            self.work_dir,
            state=PENDING,
            requeues=record.get('requeues', 0) + 1,
            error='preempted or timed out: requeued, resumes from its last '
            'checkpoint')
        return super().checkpoint(*args, **kwargs)


def run_in_worker(work_dir: str) -> int:
    """:func:`run_one` as a worker process runs it: 0 when done, 1 after an
    error (recorded in sweep_run.json; the trace goes to the console
    log)."""
    try:
        run_one(osp.abspath(work_dir))
    except Exception:
        import traceback
        traceback.print_exc()
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Run one run of a sweep (tools/sweep.py starts it)')
    parser.add_argument('work_dir', help="the run's work dir")
    return run_in_worker(parser.parse_args(argv).work_dir)


if __name__ == '__main__':
    sys.exit(main())
