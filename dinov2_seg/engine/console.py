"""A readable console for tools/train.py and tools/test.py.

mmengine writes everything it logs (environment, the whole config, the hook
table, a line per logging interval) both to the console and to the work
dir's log file. By default the tools keep the full log in the file and show
on the console only warnings, progress bars (:class:`ProgressBarHook`) and
the evaluation results; ``--verbose`` (or ``verbose = True`` in a config)
restores mmengine's console.
"""
import logging
import re
import sys
import warnings
from typing import Type

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner

# Warnings that the libraries raise on every run of the official recipes and
# that a user cannot act on; the quiet console drops them (mmengine's ones
# still reach the log file, --verbose shows everything).
LIBRARY_NOISE = (
    # mmseg's own loss builder and file backend use deprecated mmengine APIs.
    r'``build_loss`` would be deprecated',
    r'"FileClient" will be deprecated',
    r'"HardDiskBackend" is the alias',
    # The official recipes' loss setting (kept for fidelity).
    r'Default ``avg_non_ignore`` is False',
    # The visualisation hook is off unless --show/--show-dir is given.
    r'The draw is False',
    # mmseg's IoUMetric has no default metric-name prefix.
    r'The prefix is not set in metric class',
)
_NOISE = re.compile('|'.join(LIBRARY_NOISE))


class ConsoleFilter(logging.Filter):
    """Let warnings and errors through (except :data:`LIBRARY_NOISE`), and
    information only while ``show_info`` is set (the progress hook sets it
    while the evaluator prints its results, e.g. mmseg's per-class
    table)."""

    def __init__(self):
        super().__init__()
        self.show_info = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return not _NOISE.search(record.getMessage())
        return self.show_info


class _ConsoleFormatter(logging.Formatter):
    """Results as they are (a table needs no timestamp in front); warnings
    and errors in mmengine's format."""

    def __init__(self, formatter: logging.Formatter):
        super().__init__()
        self.formatter = formatter

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self.formatter.format(record)
        return record.getMessage().strip('\n')


class _CurrentStdout:
    """Write to whatever ``sys.stdout`` is at the time of the write.

    mmengine's console handler keeps the stream it was built with; a live
    progress bar replaces ``sys.stdout`` with a proxy that prints above the
    bar, and records must go through it or they tear the bar apart.
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def console_filters(logger: logging.Logger) -> list:
    """The :class:`ConsoleFilter` objects on ``logger``'s handlers."""
    return [
        f for handler in logger.handlers for f in handler.filters
        if isinstance(f, ConsoleFilter)
    ]


class QuietConsoleRunner(Runner):
    """mmengine's Runner whose console shows only what
    :class:`ConsoleFilter` lets through; the log file is unchanged."""

    def build_logger(self, *args, **kwargs) -> MMLogger:
        logger = super().build_logger(*args, **kwargs)
        for handler in logger.handlers:
            # The console: a plain StreamHandler (FileHandler subclasses it).
            if type(handler) is logging.StreamHandler and not any(
                    isinstance(f, ConsoleFilter) for f in handler.filters):
                handler.addFilter(ConsoleFilter())
                handler.setFormatter(_ConsoleFormatter(handler.formatter))
                handler.setStream(_CurrentStdout())
        return logger


def hide_library_noise() -> None:
    """Ignore the Python warnings of :data:`LIBRARY_NOISE` in this process
    (and the data loader workers it forks)."""
    for pattern in LIBRARY_NOISE:
        warnings.filterwarnings('ignore', message=f'.*{pattern}')


def runner_for_console(cfg: Config, verbose: bool = False) -> Type[Runner]:
    """The runner class for ``cfg``: mmengine's own when ``verbose`` (or the
    config's ``verbose``) is set, else the quiet console with a progress bar
    (added to ``cfg.custom_hooks``)."""
    if verbose or cfg.get('verbose', False):
        return Runner
    hide_library_noise()
    hooks = cfg.get('custom_hooks') or []
    if not any(h.get('type') == 'ProgressBarHook' for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type='ProgressBarHook')]
    return QuietConsoleRunner
