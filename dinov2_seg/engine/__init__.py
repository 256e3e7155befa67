from .console import ConsoleFilter, QuietConsoleRunner, runner_for_console
from .hooks import ProgressBarHook

__all__ = [
    'ConsoleFilter', 'ProgressBarHook', 'QuietConsoleRunner',
    'runner_for_console'
]
