"""mmengine's ``CheckpointHook``, safe to kill at any moment."""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from ..atomic_file_backend import (ATOMIC_BACKEND, AtomicLocalBackend,
                                   partial_files)


@HOOKS.register_module()
class DinoCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose checkpoints survive a crash at any moment.

    A subclass is needed because mmengine's hook, in
    ``_save_checkpoint_with_step``, (1) deletes the oldest kept checkpoint
    *before* writing the new one, (2) writes the new one in place and (3)
    writes ``last_checkpoint`` with a plain ``open()``, which no backend
    setting changes. A run killed while a checkpoint was written (with the
    project's ``max_keep_ckpts=1``) was left with a truncated new file and a
    ``last_checkpoint`` naming the deleted old one: ``--resume`` failed and
    the work was lost. Here, in this order:

    1. the checkpoint is written through :class:`AtomicLocalBackend` (a
       ``.partial`` file renamed when complete), the default for a local
       ``out_dir`` when no ``backend_args`` are given;
    2. ``last_checkpoint`` is replaced the same way to name it;
    3. only then is the outdated checkpoint deleted.

    A kill at any point leaves ``last_checkpoint`` naming a complete file,
    and no file under a checkpoint's name is ever partial. ``.partial``
    leftovers of a killed write are deleted when training (re)starts.
    Everything else (intervals, ``save_best``, ``max_keep_ckpts`` and its
    record in the message hub) is mmengine's.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if (self.backend_args is None and self.file_client_args is None
                and type(self.file_backend) is LocalBackend):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
            self.file_backend = get_file_backend(
                self.out_dir, backend_args=self.backend_args)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for leftover in partial_files(self.out_dir):
                runner.logger.info(f'Removing {leftover}, a checkpoint '
                                   'write that was interrupted')
                os.remove(leftover)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = self._record_kept_step(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        # Sharded (model-parallel) saves gather on every rank; the files
        # are the main process's.
        if not is_main_process():
            return
        AtomicLocalBackend().put_text(
            str(self.last_ckpt), osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None:
            self._remove_checkpoint(outdated)

    def _record_kept_step(self, runner, step):
        """mmengine's ``max_keep_ckpts`` bookkeeping (the message hub's
        ``keep_ckpt_ids``, saved with the checkpoint); returns the step
        whose file is now outdated (deleted after the new one is written),
        or None."""
        if self.max_keep_ckpts <= 0:
            return None
        # _save_checkpoint and _save_best_checkpoint may both save a step.
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            return None
        outdated = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return outdated

    def _remove_checkpoint(self, step) -> None:
        path = self.file_backend.join_path(self.out_dir,
                                           self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # DeepSpeed saves directories
            self.file_backend.rmtree(path)
