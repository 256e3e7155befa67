"""The Slurm launcher, through submitit (Meta's convention for its
evaluations): one job array, a task per run, each run requeued on
preemption or time-out and resumed from its last checkpoint by the same
code as a local re-run (``checkpoint`` of
:class:`dinov2_seg.cli.sweep_run.SweepRun`)."""
import os.path as osp
import shlex
from typing import Any, Callable, Dict, List, Optional

from .manifest import PENDING, update_run_file

SUBMITIT_FOLDER = 'slurm'


def parse_slurm_args(text: Optional[str]) -> Dict[str, Any]:
    """``--slurm-args "--account=vision --constraint=volta32gb --exclusive"``
    as submitit's ``additional_parameters`` (each becomes an #SBATCH
    line)."""
    parameters: Dict[str, Any] = {}
    for word in shlex.split(text or ''):
        if not word.startswith('--'):
            raise ValueError(f'--slurm-args: {word!r} is not an sbatch option '
                             '(expected --key=value or --flag)')
        key, sep, value = word[2:].partition('=')
        parameters[key.replace('-', '_')] = value if sep else True
    return parameters


def slurm_parameters(name: str,
                     gpus_per_run: int = 1,
                     partition: Optional[str] = None,
                     time_min: int = 60,
                     cpus_per_gpu: int = 8,
                     max_parallel: int = 256,
                     slurm_args: Optional[str] = None) -> Dict[str, Any]:
    """submitit's SlurmExecutor parameters for a sweep's runs: a task per
    GPU (one process per GPU, as mmengine's slurm launcher expects)."""
    tasks = max(gpus_per_run, 1)
    parameters: Dict[str, Any] = dict(
        job_name=name,
        time=time_min,
        nodes=1,
        ntasks_per_node=tasks,
        cpus_per_task=cpus_per_gpu,
        array_parallelism=max_parallel,
        # Preemption and time-out arrive as USR2 90 s ahead: time to
        # requeue (the run resumes from its last checkpoint).
        signal_delay_s=90)
    if gpus_per_run:
        parameters['gpus_per_node'] = gpus_per_run
    if partition:
        parameters['partition'] = partition
    extra = parse_slurm_args(slurm_args)
    if extra:
        parameters['additional_parameters'] = extra
    return parameters


def sbatch_script(folder: str, parameters: Dict[str, Any],
                  num_runs: int) -> str:
    """The sbatch file submitit's SlurmExecutor writes for ``num_runs``
    runs (a job array when there are several), rendered by submitit itself
    without a cluster: its executor refuses to be built where ``srun`` is
    missing, so the rendering goes through a subclass that skips that
    check and submits nothing."""
    from submitit import SlurmExecutor

    class _RenderingSlurmExecutor(SlurmExecutor):

        @classmethod
        def affinity(cls) -> int:
            return 1

    executor = _RenderingSlurmExecutor(folder)
    executor.update_parameters(**parameters)
    if num_runs > 1:
        # As SlurmExecutor._internal_process_submissions does for arrays.
        executor.parameters['map_count'] = num_runs
    return executor._make_submission_file_text(
        executor._submitit_command_str, uid='')


def submit_runs(executor, runs: List[dict],
                job_for: Callable[[dict], Callable]) -> List[Any]:
    """Submit a job per run (``job_for(run)``: a picklable callable, e.g.
    ``SweepRun(work_dir)``) through a submitit executor in one batch (a job
    array on Slurm) and record each job's id in the run's file."""
    with executor.batch():
        jobs = [executor.submit(job_for(run)) for run in runs]
    for run, job in zip(runs, jobs):
        update_run_file(
            run['work_dir'],
            state=PENDING,
            slurm_job_id=job.job_id,
            error=None)
    return jobs


def slurm_executor(sweep_dir: str, parameters: Dict[str, Any]):
    """submitit's SlurmExecutor, its files in ``SWEEP_DIR/slurm``."""
    from submitit import SlurmExecutor
    executor = SlurmExecutor(osp.join(sweep_dir, SUBMITIT_FOLDER))
    executor.update_parameters(**parameters)
    return executor
