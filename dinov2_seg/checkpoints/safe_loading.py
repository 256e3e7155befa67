"""Every checkpoint read with ``weights_only=True``, on every torch the
project accepts, and mmengine's own checkpoints still readable.

mmengine 0.10 calls ``torch.load`` without ``weights_only`` (for files) and
``torch.hub.load_state_dict_from_url`` (for URLs), whose default is
``weights_only=False`` on every torch: a downloaded pickle could run code,
and so could any file on torch < 2.6. mmengine's ``CheckpointLoader`` picks
its loader by path prefix, so the loaders here replace its local and URL
schemes: the runner's ``load_from`` / ``--resume``, ``init_cfg``
``Pretrained`` and the project's own readers all go through them.

``weights_only=True`` rejects the numpy arrays and ``HistoryBuffer``
objects that mmengine stores in every checkpoint's ``message_hub`` and
``meta``, and the ``ShardedTensor`` records of sharded (FSDP ``'local'``)
checkpoints; instead of turning it off, exactly those globals are
allowlisted.
"""
import http.client
import os
import os.path as osp
import pickle
import tempfile
import urllib.request
from typing import Any, Optional
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

# Schemes read through a downloaded copy; file:// serves local mirrors.
URL_PREFIXES = ('http://', 'https://', 'file://')
# HistoryBuffer pickles its statistics table as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _allowed_getattr(owner: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` during weights-only loading: only
    HistoryBuffer's statistics methods and ShardedTensor's nested
    ``ProcessGroupState`` record may be looked up."""
    # The statistics registered with HistoryBuffer.register_statistics are
    # listed only in the private _statistics_methods (mmengine pinned in
    # setup.py).
    statistics = set(_HISTORY_BUFFER_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in statistics:
        return getattr(owner, name)
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    if owner is ShardedTensor and name == 'ProcessGroupState':
        return owner.ProcessGroupState
    raise pickle.UnpicklingError(
        f'weights_only load: refusing getattr({owner!r}, {name!r}); only '
        f'HistoryBuffer statistics {sorted(statistics)} and '
        'ShardedTensor.ProcessGroupState may be looked up')


def _numpy_globals() -> list:
    multiarray = (getattr(np, '_core', None) or np.core).multiarray
    numeric = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    found = [np.ndarray, np.dtype, *{type(np.dtype(c)) for c in numeric}]
    # Files written under numpy 1.x name numpy.core, under 2.x numpy._core.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        found += [(multiarray._reconstruct, f'{module}._reconstruct'),
                  (multiarray.scalar, f'{module}.scalar')]
    return found


def _sharded_tensor_globals() -> list:
    """The classes of a ``ShardedTensor`` as FSDP's ``'local'`` checkpoints
    (``iter_N.pth/rank{i}.pth``) pickle it: torch's own metadata records
    (dataclasses, an enum, a device name); unpickling one only checks the
    process group against the one saved."""
    from torch.distributed import remote_device
    from torch.distributed._shard import metadata, sharding_spec
    from torch.distributed._shard.sharded_tensor import (api, shard)
    from torch.distributed._shard.sharded_tensor import \
        metadata as tensor_metadata
    return [
        api.ShardedTensor, api.ShardedTensor.ProcessGroupState, shard.Shard,
        metadata.ShardMetadata, tensor_metadata.ShardedTensorMetadata,
        tensor_metadata.TensorProperties, tensor_metadata.MEM_FORMAT_ENCODING,
        sharding_spec.ChunkShardingSpec, sharding_spec.EnumerableShardingSpec,
        remote_device._remote_device
    ]


def load_weights_only(filename: str,
                      map_location: Any = None,
                      mmap: bool = False) -> Any:
    """``torch.load`` of a local file with ``weights_only=True`` and the
    allowlist of :func:`install_safe_loading` (memory-mapped with
    ``mmap``: tensors are read only when used).

    Raises:
        FileNotFoundError: if ``filename`` is not a file.
        pickle.UnpicklingError: if the file holds anything but tensors,
            containers, numbers and the allowlisted mmengine objects.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f'{filename} is not a plain checkpoint (tensors, numbers, '
            'containers and the objects mmengine writes); it was refused '
            'without running any of its code. Only load a file you trust '
            f'by other means. {error}') from error


def url_cache_path(url: str) -> str:
    """Where a checkpoint URL is kept once downloaded: torch hub's
    ``checkpoints`` folder, as mmengine and torch cache them."""
    name = osp.basename(urlparse(url).path)
    return osp.join(torch.hub.get_dir(), 'checkpoints', name)


def download_file(url: str, path: str) -> None:
    """Download ``url`` to ``path``, complete or not at all.

    torch hub's ``download_url_to_file`` takes a connection that closes
    early for the end of the file and keeps the truncated copy; here the
    bytes go to a temporary file beside ``path``, renamed only when as many
    arrived as the server announced.

    Raises:
        OSError: if the transfer fails or ends short; ``path`` is then left
            as it was.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = tempfile.NamedTemporaryFile(
        dir=folder,
        prefix=osp.basename(path) + '.',
        suffix='.part',
        delete=False)
    try:
        with partial, urllib.request.urlopen(url) as response:
            announced = response.headers.get('Content-Length')
            received = 0
            for block in iter(lambda: response.read(1 << 20), b''):
                partial.write(block)
                received += len(block)
        if announced is not None and received != int(announced):
            raise OSError(f'{url}: the connection closed after {received} '
                          f'of {announced} bytes')
        os.replace(partial.name, path)
    except http.client.HTTPException as error:
        raise OSError(f'{url}: {type(error).__name__}: {error}') from error
    finally:
        if osp.exists(partial.name):
            os.remove(partial.name)


def fetch_url(url: str) -> str:
    """The local copy of ``url``, downloaded once (rank 0 first in a
    distributed run, the other ranks wait and reuse its file)."""
    path = url_cache_path(url)
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(path):
        download_file(url, path)
    if world_size > 1:
        torch.distributed.barrier()
    return path


def local_file(filename: str) -> str:
    """The local file behind a checkpoint name: the path itself, or the
    downloaded copy of a URL."""
    if filename.startswith(URL_PREFIXES):
        return fetch_url(filename)
    return filename


# mmengine logs "Loads checkpoint by <name[10:]> backend", hence the names.
def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    return load_weights_only(filename, map_location)


def load_from_url(filename: str, map_location: Optional[Any] = None) -> Any:
    return load_weights_only(fetch_url(filename), map_location)


def install_safe_loading() -> None:
    """Allowlist the globals of mmengine checkpoints and make every scheme
    of mmengine's ``CheckpointLoader`` safe: local files, URLs
    (``file://`` too) and the model-zoo names read with
    ``weights_only=True``, the other schemes refused."""
    # model_zoo builds on this module's readers, hence imported here.
    from .model_zoo import ZOO_SCHEMES, refusing_loader
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        (_allowed_getattr, 'builtins.getattr'),
        *_numpy_globals(),
        *_sharded_tensor_globals(),
    ])
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(URL_PREFIXES, load_from_url, force=True)
    for prefix, loader in ZOO_SCHEMES.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    # A scheme of a newer mmengine that the project has not reviewed would
    # keep mmengine's plain torch.load: refused until listed in ZOO_SCHEMES.
    # (_schemes is the loader's only listing of its schemes.)
    served = {'', *URL_PREFIXES, *ZOO_SCHEMES}
    for prefix in set(CheckpointLoader._schemes) - served:
        CheckpointLoader.register_scheme(
            prefix, refusing_loader(prefix), force=True)
