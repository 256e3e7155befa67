"""A local file backend whose writes are all-or-nothing.

mmengine's ``LocalBackend.put`` opens the target with ``'wb'`` and writes
into it, so a process killed during the write (SIGKILL, out of memory, a
pre-empted job) leaves a truncated file under the final name:
``iter_4000.pth`` looks finished and fails to load, or is what
``last_checkpoint`` names. :class:`AtomicLocalBackend` writes to
``<name>.partial`` beside the target, flushes it to disk and renames it over
the target (``os.replace``, atomic on POSIX and Windows within a file
system): a reader sees the old file or the whole new one, never part of
one. Registered as mmengine's file backend ``'atomic_local'``, so that
``backend_args=dict(backend='atomic_local')`` selects it wherever mmengine
takes backend arguments (``save_checkpoint``, ``CheckpointHook``).
"""
import glob
import os
import os.path as osp
from pathlib import Path
from typing import List, Union

import mmengine
from mmengine.fileio import LocalBackend, register_backend

ATOMIC_BACKEND = 'atomic_local'
PARTIAL_SUFFIX = '.partial'


def partial_name(filepath: Union[str, Path]) -> str:
    """Where :class:`AtomicLocalBackend` writes ``filepath`` before renaming
    it: ``<filepath>.partial`` (a name no loader takes for a checkpoint)."""
    return f'{filepath}{PARTIAL_SUFFIX}'


def partial_files(directory: Union[str, Path]) -> List[str]:
    """The ``*.partial`` files left in ``directory`` by writes that were
    killed before their rename."""
    return sorted(
        glob.glob(osp.join(glob.escape(str(directory)), f'*{PARTIAL_SUFFIX}')))


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with ``put`` / ``put_text`` writing a
    temporary file and renaming it over the target (see the module
    docstring); reads, listing and removal are ``LocalBackend``'s."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write ``obj`` to ``filepath``: all of it, or (when the process
        dies first) nothing; a killed write leaves only
        ``<filepath>.partial``."""
        directory = osp.dirname(osp.abspath(filepath))
        mmengine.mkdir_or_exist(directory)
        partial = partial_name(filepath)
        self.write_partial(obj, partial)
        os.replace(partial, filepath)
        _sync_directory(directory)  # the rename itself survives a crash

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

    def write_partial(self, obj: bytes, partial: str) -> None:
        """Write the bytes under their temporary name and flush them to the
        disk, so that the rename never publishes a file whose data are
        still only in the page cache (a power cut would then lose it)."""
        with open(partial, 'wb') as file:
            file.write(obj)
            file.flush()
            os.fsync(file.fileno())


def _sync_directory(directory: str) -> None:
    if os.name != 'posix':  # directories cannot be opened elsewhere
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
