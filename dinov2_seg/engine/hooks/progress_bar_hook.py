"""Progress bars for training, validation and testing."""
import time
from typing import Dict, Optional

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ..console import console_filters


class ProgressDisplay:
    """One bar. In a terminal it is redrawn live (rich); otherwise (a log
    file, a pipe) it is printed as a line every ``every_fraction`` of the
    work or ``every_seconds``, and once at the end.

    While it is live, rich hides the cursor and routes ``sys.stdout`` and
    ``sys.stderr`` through itself: :meth:`finish` must run, also when the
    work fails, or the terminal is left without a cursor.
    """

    def __init__(self, name: str, total: Optional[int], completed: int,
                 unit: str, every_fraction: float, every_seconds: float):
        console = Console()
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn('{task.description:<5}'),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn('{task.fields[status]}'),
            TimeElapsedColumn(),
            TextColumn('eta'),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=self.live)
        self.task = self.progress.add_task(
            name, total=total, completed=completed, status='')
        self.total = total
        self.every_fraction = every_fraction
        self.every_seconds = every_seconds
        self.printed_at = (completed, time.monotonic())
        if self.live:
            self.progress.start()

    def update(self, completed: int, status: str = '') -> None:
        self.progress.update(self.task, completed=completed, status=status)
        if self.live:
            return
        done, when = self.printed_at
        step = self.every_fraction * (self.total or 0)
        if (self.total
                and completed - done >= step) or (time.monotonic() - when
                                                  >= self.every_seconds):
            self._print_line(completed)

    @property
    def completed(self) -> int:
        return int(self.progress.tasks[0].completed)

    def _print_line(self, completed: int) -> None:
        self.progress.console.print(self.progress.get_renderable())
        self.printed_at = (completed, time.monotonic())

    def finish(self) -> None:
        """Stop redrawing (the cursor comes back) or print the last line;
        once is enough, a second call does nothing."""
        if self.live:
            self.progress.stop()
        elif self.printed_at[0] != self.completed:
            self._print_line(self.completed)
        self.printed_at = (self.completed, self.printed_at[1])


@HOOKS.register_module()
class DinoProgressBarHook(Hook):
    """Show a progress bar per loop and the evaluation results.

    Training shows iterations, the current loss and learning rate, elapsed
    time and ETA; validation and testing show the images done. When the
    runner's console is filtered (:class:`~dinov2_seg.engine.console.
    QuietConsoleRunner`), what the evaluator logs (mmseg's per-class table)
    is let through, followed by one line of summary metrics.

    Only the main process draws.

    Args:
        every_fraction (float): Without a terminal, print a line each time
            this fraction of the loop is done ...
        every_seconds (float): ... or this much time has passed.
    """

    # Before LoggerHook (BELOW_NORMAL), whose summary line would otherwise
    # still find the results window open.
    priority = 'NORMAL'

    def __init__(self,
                 every_fraction: float = 0.1,
                 every_seconds: float = 600.0):
        self.every_fraction = every_fraction
        self.every_seconds = every_seconds
        self._phases: Dict[str, ProgressDisplay] = {}
        self._resume_train = False

    # Bars -----------------------------------------------------------------

    def _start(self, name: str, total: Optional[int], completed: int,
               unit: str) -> None:
        if is_main_process():
            self._phases[name] = ProgressDisplay(name, total, completed, unit,
                                                 self.every_fraction,
                                                 self.every_seconds)

    def _finish(self, name: str) -> None:
        phase = self._phases.pop(name, None)
        if phase is not None:
            phase.finish()

    @staticmethod
    def _images(loop) -> Optional[int]:
        try:  # the sampler holds this process's share of the dataset
            return len(loop.dataloader.sampler)
        except TypeError:
            return None

    def _update_eval(self, name: str, loop, batch_idx: int) -> None:
        phase = self._phases.get(name)
        if phase is None:
            return
        done = (batch_idx + 1) * (loop.dataloader.batch_size or 1)
        if phase.total is not None:
            done = min(done, phase.total)
        phase.update(done)
        if batch_idx + 1 == len(loop.dataloader):
            self._finish(name)

    # Training -------------------------------------------------------------

    def before_train(self, runner) -> None:
        self._start('train', runner.max_iters, runner.iter, 'iters')

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        phase = self._phases.get('train')
        if phase is None:
            return
        hub = runner.message_hub
        status = []
        for key, label, fmt in (('train/loss', 'loss', '.4f'), ('train/lr',
                                                                'lr', '.2e')):
            scalar = hub.log_scalars.get(key)
            if scalar is not None:
                status.append(f'{label} {scalar.current():{fmt}}')
        phase.update(runner.iter + 1, '  '.join(status))
        if runner.iter + 1 >= runner.max_iters:
            self._finish('train')

    def after_train(self, runner) -> None:
        self._finish('train')

    # Validation and testing -----------------------------------------------

    def before_val_epoch(self, runner) -> None:
        # Validation interrupts training: its bar stops where it is and a
        # new one continues after the results.
        self._resume_train = 'train' in self._phases
        self._finish('train')
        self._start('val', self._images(runner.val_loop), 0, 'images')

    def after_val_iter(self,
                       runner,
                       batch_idx,
                       data_batch=None,
                       outputs=None) -> None:
        self._update_eval('val', runner.val_loop, batch_idx)
        if batch_idx + 1 == len(runner.val_loop.dataloader):
            self._show_results(runner, True)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish('val')
        self._print_metrics(runner, f'Validation at iteration {runner.iter}',
                            metrics)
        if self._resume_train and runner.iter < runner.max_iters:
            self._start('train', runner.max_iters, runner.iter, 'iters')

    def before_test_epoch(self, runner) -> None:
        self._start('test', self._images(runner.test_loop), 0, 'images')

    def after_test_iter(self,
                        runner,
                        batch_idx,
                        data_batch=None,
                        outputs=None) -> None:
        self._update_eval('test', runner.test_loop, batch_idx)
        if batch_idx + 1 == len(runner.test_loop.dataloader):
            self._show_results(runner, True)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish('test')
        self._print_metrics(runner, None, metrics)

    def after_run(self, runner) -> None:
        self.stop()

    def stop(self) -> None:
        """Finish every bar. mmengine calls no hook when a loop raises, so
        :class:`~dinov2_seg.engine.console.QuietConsoleRunner` calls this
        then, before the traceback is printed."""
        for name in list(self._phases):
            self._finish(name)

    # Results --------------------------------------------------------------

    @staticmethod
    def _show_results(runner, show: bool) -> None:
        for console_filter in console_filters(runner.logger):
            console_filter.show_info = show

    def _print_metrics(self, runner, title: Optional[str],
                       metrics: Optional[dict]) -> None:
        self._show_results(runner, False)
        if not is_main_process() or not metrics:
            return
        line = '  '.join(
            f'{key}: {value:.2f}' if isinstance(value, (
                float, np.floating)) else f'{key}: {value}'
            for key, value in metrics.items())
        print(f'{title}: {line}' if title else line, flush=True)
