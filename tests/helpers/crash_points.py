"""Crash points for tests/test_crash_resume.py, imported into a real
``tools/train.py`` process through its config's ``custom_imports``.

``DINOV2_SEG_CRASH_AT`` chooses the moment, ``DINOV2_SEG_CRASH_MARKER`` a
file: when the process reaches the moment it creates the file and waits,
and the test, which polls for it, kills the process with SIGKILL. Moments:

- ``iteration:N``: inside training iteration N (0-based), after the
  backbone's forward, before the head, the backward pass and the step;
- ``checkpoint:N``: while the checkpoint of iteration N (``iter_N.pth``)
  is being written, half of its bytes on disk (the project's
  ``AtomicLocalBackend.write_partial`` is slowed down here, in this process
  only; the rename after it is the code under test);
- ``validation:N``: during the validation after iteration N, once its
  first batch has been evaluated.
"""
import os
import time
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from dinov2_seg.engine.atomic_file_backend import AtomicLocalBackend

CRASH_AT = os.environ.get('DINOV2_SEG_CRASH_AT', '')
MOMENT, _, STEP = CRASH_AT.partition(':')


def wait_for_the_kill() -> None:
    """Tell the test where we are, then wait for its SIGKILL (exit with
    status 97 if it never comes, rather than hang the suite)."""
    Path(os.environ['DINOV2_SEG_CRASH_MARKER']).write_text(CRASH_AT)
    time.sleep(120)
    os._exit(97)


@HOOKS.register_module()
class CrashPointHook(Hook):
    """Stops training at the ``iteration`` and ``validation`` moments."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if MOMENT == 'iteration' and runner.iter == int(STEP):
            model = runner.model.module if is_model_wrapper(
                runner.model) else runner.model
            model.backbone.register_forward_hook(
                lambda *args: wait_for_the_kill())

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if (MOMENT == 'validation' and runner.iter == int(STEP)
                and batch_idx == 0):
            wait_for_the_kill()


_write_partial = AtomicLocalBackend.write_partial


def _write_half_then_wait(self, obj: bytes, partial: str) -> None:
    name = os.path.basename(partial)
    if MOMENT != 'checkpoint' or not name.startswith(f'iter_{STEP}.pth'):
        return _write_partial(self, obj, partial)
    with open(partial, 'wb') as file:
        file.write(obj[:len(obj) // 2])
        file.flush()
    wait_for_the_kill()


AtomicLocalBackend.write_partial = _write_half_then_wait
