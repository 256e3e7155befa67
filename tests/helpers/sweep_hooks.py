"""A hook that interrupts training as a cluster does, for the sweep tests:
after iteration ``at``, if ``flag`` exists and names this run (``SIGNAL``
or ``SIGNAL WORK_DIR_NAME``), it deletes the flag (so that the resumed run
goes on) and sends that signal to its own process: SIGKILL as the
out-of-memory killer or a crash, SIGUSR2 as Slurm before a preemption or
time-out (submitit requeues on it)."""
import os
import os.path as osp
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SignalAtIterHook(Hook):

    def __init__(self, at: int, flag: str):
        self.at = at
        self.flag = flag

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 != self.at or not osp.isfile(self.flag):
            return
        with open(self.flag, encoding='utf-8') as file:
            name, _, run = file.read().strip().partition(' ')
        if run and run != osp.basename(osp.normpath(runner.work_dir)):
            return
        os.remove(self.flag)
        os.kill(os.getpid(), getattr(signal, name))
