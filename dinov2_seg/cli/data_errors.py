"""A run stopped by a bad dataset file says so in one line.

The error names the file and what is wrong (:mod:`dinov2_seg.datasets.errors`);
a training run also says which checkpoint it keeps and how to resume.
``--verbose`` re-raises with the whole traceback.
"""
import contextlib
import os.path as osp
import shlex
import sys
from typing import Callable, Iterator, Optional, Sequence

from dinov2_seg.datasets.errors import one_line_data_error


@contextlib.contextmanager
def stop_on_bad_file(
        verbose: bool,
        advice: Optional[Callable[[], str]] = None) -> Iterator[None]:
    """Turn an error caused by a dataset file into one line on stderr
    (then ``advice()``, if given) and exit status 1; other errors, and all
    with ``verbose``, propagate unchanged."""
    try:
        yield
    except Exception as error:  # noqa: B902  (only data-file errors kept)
        line = one_line_data_error(error)
        if line is None or verbose:
            raise
        print(f'Error: {line}', file=sys.stderr, flush=True)
        if advice is not None:
            print(advice(), file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def resume_advice(work_dir: str, config: str,
                  argv: Sequence[str]) -> Callable[[], str]:
    """What a training run stopped by a bad file keeps (the checkpoint
    that ``work_dir/last_checkpoint`` names) and the command that resumes
    it once the file is fixed."""

    def advice() -> str:
        rerun = ['python', 'tools/train.py', *argv]
        resume = rerun + ([] if '--resume' in argv else ['--resume'])
        marker = osp.join(work_dir, 'last_checkpoint')
        checkpoint = None
        if osp.isfile(marker):
            with open(marker) as file:
                checkpoint = file.read().strip() or None
        check = f'python tools/check_dataset.py {config} lists every bad file'
        if checkpoint is None:
            return (f'No checkpoint was written yet. Fix the file ({check}) '
                    f'and start again: {shlex.join(rerun)}')
        return (f'The last checkpoint, {checkpoint}, is kept. Fix the file '
                f'({check}) and resume with: {shlex.join(resume)}')

    return advice
