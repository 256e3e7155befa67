"""A readable console for the tools.

mmengine writes everything it logs (environment, the whole config, the hook
table, a line per logging interval) both to the console and to the work
dir's log file. By default tools/train.py and tools/test.py keep the full
log in the file and show on the console only warnings, the lines a user acts
on (:data:`ACTIONABLE_INFO`), progress bars (:class:`DinoProgressBarHook`) and
the evaluation results; ``--verbose`` (or ``verbose = True`` in a config)
restores mmengine's console. tools/inference.py and tools/export_onnx.py,
which have no runner, get the same filter from :func:`quiet_console`.
"""
import contextlib
import logging
import re
import sys
import warnings
from typing import Iterator, Type

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
    # The visualisation hook is off unless --show/--show-dir is given.
    r'The draw is False',
    # mmseg's IoUMetric has no default metric-name prefix.
    r'The prefix is not set in metric class',
    # mmengine's optimizer constructor (with paramwise_cfg, as the
    # Mask2Former recipe) names each parameter of the frozen backbone.
    r'is skipped since its requires_grad=False',
    # mmdet's Mask2Former calls torch.meshgrid without ``indexing``.
    r'torch\.meshgrid: in an upcoming release',
    # mmengine's FSDP strategy looks its policies up in the "function"
    # registry, which has no mmseg scope (the lookup then succeeds).
    r'Failed to search registry with scope "mmseg" in the "function"',
)
_NOISE = re.compile('|'.join(LIBRARY_NOISE))

# mmseg's CrossEntropyLoss warns whenever ``avg_non_ignore`` is left out.
# The project's recipes leave it out on purpose (Meta's heads were trained
# so), so the warning is hidden while a model whose losses are exactly the
# recipe's is built (:func:`recipe_warnings_hidden`); a loss of the user's
# own still warns.
RECIPE_LOSS_WARNING = r'Default ``avg_non_ignore`` is False'
# As configs/_base_/models/dinov2_linear.py sets it (also the ms recipe's).
RECIPE_LOSS = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)

# mmengine INFO lines that a user acts on, shown by the quiet console too:
# what was resumed or loaded and from where, where checkpoints go, and the
# SyncBN -> BN conversion of a run without distributed training.
ACTIONABLE_INFO = (
    r'^Auto resumed from ',
    r'^resumed epoch: ',
    r'^Load checkpoint from ',
    r'^Checkpoints will be saved to ',
    r'^The best checkpoint .* is saved to ',
    r'SyncBatchNorm \(SyncBN\) layers in the model will be automatically '
    r'reverted',
)
_ACTIONABLE = re.compile('|'.join(ACTIONABLE_INFO))


class ConsoleFilter(logging.Filter):
    """Let warnings and errors through (except :data:`LIBRARY_NOISE`),
    :data:`ACTIONABLE_INFO`, and other information only while ``show_info``
    is set (the progress hook sets it while the evaluator prints its
    results, e.g. mmseg's per-class table)."""

    def __init__(self):
        super().__init__()
        self.show_info = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return not _NOISE.search(record.getMessage())
        return self.show_info or bool(_ACTIONABLE.search(record.getMessage()))


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


def filter_console(logger: logging.Logger) -> logging.Logger:
    """Put a :class:`ConsoleFilter` on ``logger``'s console handler (a
    plain StreamHandler; FileHandler subclasses it), once."""
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler and not any(
                isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())
            handler.setFormatter(_ConsoleFormatter(handler.formatter))
            handler.setStream(_CurrentStdout())
    return logger


def _recipe_losses_only(node) -> bool:
    """Whether every loss in a model config that raises the
    ``avg_non_ignore`` warning is the recipe's own (:data:`RECIPE_LOSS`)."""
    if isinstance(node, dict):
        kind = str(node.get('type', ''))
        if kind.endswith('CrossEntropyLoss') and not node.get(
                'avg_non_ignore', False):
            if kind.startswith('mmdet.'):
                # mmdet's warns only with an ignore_index (no recipe sets one)
                return node.get('ignore_index') is None
            return dict(node, type=kind.split('.')[-1]) == RECIPE_LOSS
        return all(_recipe_losses_only(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return all(_recipe_losses_only(v) for v in node)
    return True


@contextlib.contextmanager
def recipe_warnings_hidden(model_cfg) -> Iterator[None]:
    """While building ``model_cfg``: hide mmseg's ``avg_non_ignore`` warning
    if the only losses that raise it are the recipe's
    (:data:`RECIPE_LOSS`); a loss a user wrote still warns."""
    with warnings.catch_warnings():
        if _recipe_losses_only(model_cfg):
            warnings.filterwarnings(
                'ignore', message=f'.*{RECIPE_LOSS_WARNING}')
        yield


def _stop_progress(runner: Runner) -> None:
    # Imported here: the hook module uses this one's filters.
    from .hooks.progress_bar_hook import DinoProgressBarHook
    for hook in runner.hooks:
        if isinstance(hook, DinoProgressBarHook):
            hook.stop()


class QuietConsoleRunner(Runner):
    """mmengine's Runner whose console shows only what
    :class:`ConsoleFilter` lets through; the log file is unchanged. A run
    that raises stops its progress bars first, so the terminal keeps its
    cursor and the traceback is printed plainly."""

    def build_logger(self, *args, **kwargs) -> MMLogger:
        return filter_console(super().build_logger(*args, **kwargs))

    def build_model(self, model):
        with recipe_warnings_hidden(model):
            return super().build_model(model)

    def train(self):
        try:
            return super().train()
        finally:
            _stop_progress(self)

    def val(self):
        try:
            return super().val()
        finally:
            _stop_progress(self)

    def test(self):
        try:
            return super().test()
        finally:
            _stop_progress(self)


def hide_library_noise() -> None:
    """Ignore the Python warnings of :data:`LIBRARY_NOISE` in this process
    (and the data loader workers it forks)."""
    for pattern in LIBRARY_NOISE:
        warnings.filterwarnings('ignore', message=f'.*{pattern}')


def quiet_console(verbose: bool = False) -> None:
    """The quiet console for a tool without a runner: the library noise
    hidden and mmengine's current logger filtered as the runner's is
    (warnings and :data:`ACTIONABLE_INFO` shown). ``verbose`` keeps
    everything."""
    if verbose:
        return
    hide_library_noise()
    filter_console(MMLogger.get_current_instance())


def runner_for_console(cfg: Config, verbose: bool = False) -> Type[Runner]:
    """The runner class for ``cfg``: mmengine's own when ``verbose`` (or the
    config's ``verbose``) is set, else the quiet console with a progress bar
    (added to ``cfg.custom_hooks``)."""
    if verbose or cfg.get('verbose', False):
        return Runner
    hide_library_noise()
    hooks = cfg.get('custom_hooks') or []
    if not any(h.get('type') == 'DinoProgressBarHook' for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type='DinoProgressBarHook')]
    return QuietConsoleRunner
