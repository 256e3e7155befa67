"""The local launcher: each run in its own process (``python -m
dinov2_seg.cli.sweep_run WORK_DIR``), ``max_parallel`` at a time, GPUs
handed out through ``CUDA_VISIBLE_DEVICES``; one progress line per run
and the total, plain lines that read well in a pipe or a log file."""
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from .manifest import (FAILED, PENDING, RUNNING, read_json, run_file,
                       update_run_file)
from .progress import progress_line

WORKER_MODULE = 'dinov2_seg.cli.sweep_run'
CONSOLE_LOG = 'sweep_console.log'


def visible_gpus() -> List[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set,
    else those ``nvidia-smi -L`` lists. Not through torch: CUDA started in
    this process would be unusable in the runs forked from it."""
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    if listed is not None:
        return [g.strip() for g in listed.split(',') if g.strip()]
    if not shutil.which('nvidia-smi'):
        return []
    found = subprocess.run(['nvidia-smi', '-L'],
                           capture_output=True,
                           text=True)
    return [
        str(i) for i, line in enumerate(found.stdout.splitlines())
        if line.startswith('GPU ')
    ]


def _record_exit(run: dict, returncode: int) -> None:
    """What the run file says after its process ended: the worker records
    success and Python errors itself; a signal (killed, out of memory)
    leaves it 'running', made pending here so that the next invocation
    resumes it from its checkpoint."""
    record = read_json(run_file(run['work_dir'])) or {}
    if record.get('state') != RUNNING:
        return
    if returncode < 0:
        name = signal.Signals(-returncode).name
        update_run_file(
            run['work_dir'],
            state=PENDING,
            error=f'killed by {name}; resumes from its last checkpoint')
    else:
        update_run_file(
            run['work_dir'],
            state=FAILED,
            failures=record.get('failures', 0) + 1,
            error=f'exit status {returncode} (see {CONSOLE_LOG})')


def launch_local(
        runs: List[dict],
        max_parallel: int = 1,
        gpus_per_run: Optional[int] = None,
        echo: Callable[[str], None] = print,
        poll_seconds: float = 1.0,
        line_every: float = 30.0,
        worker: Optional[Callable[[str], int]] = None) -> Dict[str, int]:
    """Run ``runs`` (manifest entries whose run files are written) and
    wait for them; return each run's exit status by name.

    ``worker(work_dir)`` (``dinov2_seg.cli.sweep_run.main``'s job): where
    given and ``fork`` exists, each run is a fork of this process, which
    has imported torch and mmseg once (seconds of CPU saved per run);
    else a new interpreter runs ``python -m dinov2_seg.cli.sweep_run``."""
    if max_parallel < 1:
        raise ValueError(f'--max-parallel must be >= 1, got {max_parallel}')
    gpus = visible_gpus() if gpus_per_run != 0 else []
    if gpus_per_run is None:
        gpus_per_run = 1 if gpus else 0
    if gpus_per_run > len(gpus):
        raise ValueError(f'--gpus-per-run {gpus_per_run}: only {len(gpus)} '
                         f'GPUs visible ({",".join(gpus) or "none"})')
    free = list(gpus)
    waiting = list(runs)
    running: Dict[str, tuple] = {}
    shown: Dict[str, tuple] = {}
    status: Dict[str, int] = {}
    total = len(runs)
    while waiting or running:
        while (waiting and len(running) < max_parallel
               and len(free) >= gpus_per_run):
            run = waiting.pop(0)
            mine, free = free[:gpus_per_run], free[gpus_per_run:]
            log = osp.join(run['work_dir'], CONSOLE_LOG)
            cuda = ','.join(mine) if gpus else None
            process = (
                ForkedRun(worker, run['work_dir'], log, cuda)
                if worker is not None and can_fork() else SubprocessRun(
                    run['work_dir'], log, cuda))
            running[run['name']] = (run, process, mine, time.time())
        for name, (run, process, mine, started) in list(running.items()):
            returncode = process.poll()
            if returncode is not None:
                # The worker's own times exclude its start (interpreter,
                # imports) and this launcher's polling: the overhead.
                update_run_file(
                    run['work_dir'], process_seconds=time.time() - started)
                _record_exit(run, returncode)
                status[name] = returncode
                free.extend(mine)
                del running[name]
            line = progress_line(run)
            if _should_show(shown.get(name), line, line_every):
                echo(line)
                shown[name] = (line, time.time())
            if name in status:
                echo(_total_line(runs, status, running, total))
        if running:
            time.sleep(poll_seconds)
    return status


def can_fork() -> bool:
    return sys.platform.startswith('linux')


class SubprocessRun:
    """A run in a new interpreter, its console in ``log``."""

    def __init__(self, work_dir: str, log: str, cuda: Optional[str]):
        env = dict(os.environ)
        if cuda is not None:
            env['CUDA_VISIBLE_DEVICES'] = cuda
        with open(log, 'a', encoding='utf-8') as file:
            self.process = subprocess.Popen(
                [sys.executable, '-m', WORKER_MODULE, work_dir],
                stdout=file,
                stderr=subprocess.STDOUT,
                env=env)

    def poll(self) -> Optional[int]:
        """The exit status (negative: the signal that ended it) or None."""
        return self.process.poll()


def _forked_main(worker, work_dir: str, log: str, cuda: Optional[str]):
    # The parent's stdout may be anything (a pipe, a test's buffer): the
    # run writes to its own console log, Python and C alike.
    file = open(log, 'a', encoding='utf-8', buffering=1)
    os.dup2(file.fileno(), 1)
    os.dup2(file.fileno(), 2)
    sys.stdout = sys.stderr = file
    if cuda is not None:  # before the run touches CUDA
        os.environ['CUDA_VISIBLE_DEVICES'] = cuda
    sys.exit(worker(work_dir))


class ForkedRun:
    """A run in a fork of this process (multiprocessing's ``fork``)."""

    def __init__(self, worker, work_dir: str, log: str, cuda: Optional[str]):
        import multiprocessing
        sys.stdout.flush()
        sys.stderr.flush()
        self.process = multiprocessing.get_context('fork').Process(
            target=_forked_main, args=(worker, work_dir, log, cuda))
        self.process.start()

    def poll(self) -> Optional[int]:
        return self.process.exitcode


def _should_show(last: Optional[tuple], line: str, every: float) -> bool:
    """A line when a run's state changes, else at most every ``every``
    seconds: readable in a pipe, quiet in a log file."""
    if last is None:
        return True
    old, when = last
    if line == old:
        return False
    state = line.split('  ')[1]
    return state != old.split('  ')[1] or time.time() - when >= every


def _total_line(runs, status, running, total) -> str:
    states = [(read_json(run_file(r['work_dir'])) or {}).get('state')
              for r in runs if r['name'] in status]
    return (f'[sweep] {states.count("done")}/{total} done, '
            f'{states.count("failed")} failed, {len(running)} running, '
            f'{total - len(status) - len(running)} waiting')
