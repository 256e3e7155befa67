"""The local launcher: each run in its own process (``python -m
dinov2_seg.cli.sweep_run WORK_DIR``), ``max_parallel`` at a time, GPUs
handed out through ``CUDA_VISIBLE_DEVICES``; one progress line per run
and the total, plain lines that read well in a pipe or a log file."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from .manifest import FAILED, PENDING, RUNNING, read_json, run_file
from .manifest import update_run_file
from .progress import progress_line

WORKER_MODULE = 'dinov2_seg.cli.sweep_run'
CONSOLE_LOG = 'sweep_console.log'


def visible_gpus() -> List[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set,
    else all that torch sees."""
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    if listed is not None:
        return [g for g in listed.split(',') if g.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


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


def launch_local(runs: List[dict],
                 max_parallel: int = 1,
                 gpus_per_run: Optional[int] = None,
                 echo: Callable[[str], None] = print,
                 poll_seconds: float = 1.0,
                 line_every: float = 30.0) -> Dict[str, int]:
    """Run ``runs`` (manifest entries whose run files are written) and
    wait for them; return each run's exit status by name."""
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
            env = dict(os.environ)
            if gpus:
                env['CUDA_VISIBLE_DEVICES'] = ','.join(mine)
            log = open(
                osp.join(run['work_dir'], CONSOLE_LOG), 'a', encoding='utf-8')
            process = subprocess.Popen(
                [sys.executable, '-m', WORKER_MODULE, run['work_dir']],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env)
            running[run['name']] = (run, process, mine, log, time.time())
        for name, (run, process, mine, log,
                   started) in list(running.items()):
            if process.poll() is not None:
                log.close()
                # The worker's own times exclude its start (interpreter,
                # imports) and this launcher's polling: the overhead.
                update_run_file(
                    run['work_dir'], process_seconds=time.time() - started)
                _record_exit(run, process.returncode)
                status[name] = process.returncode
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
