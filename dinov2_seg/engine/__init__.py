from .console import (ConsoleFilter, QuietConsoleRunner, hide_library_noise,
                      runner_for_console)
from .hooks import ProgressBarHook

__all__ = [
    'ConsoleFilter', 'ProgressBarHook', 'QuietConsoleRunner',
    'hide_library_noise', 'runner_for_console'
]
