"""The flags that tools/train.py and tools/test.py share, as mmseg 1.x's
tools spell them."""
import argparse

from mmengine.config import DictAction


def add_runner_args(parser: argparse.ArgumentParser, example: str) -> None:
    """Add ``--cfg-options`` (``example``: a typical override for the
    tool's help), ``--launcher``, ``--verbose`` and the ``--local-rank``
    that torch's launchers pass."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override config entries, e.g. {example}')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help="mmengine's full log on the console (default: progress bars, "
        'warnings and results; the full log is always in the work dir)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
