"""mmengine's model-zoo checkpoint names (``torchvision://``,
``open-mmlab://``, ``mmcls://`` ...) read with ``weights_only=True``, and
its storage-service schemes refused.

mmengine's CheckpointLoader resolves a model-zoo name through a URL table
(torchvision's weight enums, ``mmengine/hub/*.json``, or
``$MMENGINE_HOME/open_mmlab.json``) and then downloads it with torch hub's
``load_state_dict_from_url``, which unpickles with ``weights_only=False``
on every torch, or reads a path under ``$MMENGINE_HOME`` with a plain
``torch.load``: either runs any code the file carries. The loaders here
take the same tables (mmengine's own functions read them) and hand the
URL or path to the weights-only readers of :mod:`.safe_loading`.

``pavi://`` (OpenMMLab's model cloud) and ``s3://`` / ``petrel://``
(Ceph through SenseTime's petrel client) read bytes with clients this
project neither installs nor can test, then unpickle them without
``weights_only``; they are refused with the way round (a local copy).
"""
import os.path as osp
from typing import Any, Callable, Dict, Mapping, Optional

from mmengine.runner import checkpoint as mmengine_checkpoint

from .safe_loading import URL_PREFIXES, load_weights_only, load_from_url


def _scheme_and_name(filename: str) -> tuple:
    scheme, name = filename.split('://', 1)
    return scheme + '://', name


def _zoo_url(filename: str, name: str, table: Mapping[str, str],
             table_name: str) -> str:
    if name not in table:
        examples = ', '.join(sorted(table)[:5])
        raise KeyError(
            f'{filename}: {name!r} is not in {table_name} ({len(table)} '
            f'names, e.g. {examples}); pass the checkpoint\'s URL or path '
            'instead')
    return table[name]


def load_from_torchvision(filename: str,
                          map_location: Optional[Any] = None) -> Any:
    """``torchvision://NAME`` (``modelzoo://NAME``, its old spelling):
    the URL of NAME in torchvision's weight tables."""
    _, name = _scheme_and_name(filename)
    try:
        table = mmengine_checkpoint.get_torchvision_models()
    except ImportError as error:
        raise ImportError(
            f'{filename}: mmengine finds torchvision:// names in '
            "torchvision's weight tables; `pip install torchvision`, or pass "
            f"the checkpoint's URL instead ({error})") from error
    url = _zoo_url(filename, name, table, "torchvision's weight tables")
    return load_from_url(url, map_location)


def load_from_openmmlab(filename: str,
                        map_location: Optional[Any] = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's
    ``hub/openmmlab.json`` updated by ``$MMENGINE_HOME/open_mmlab.json``;
    an entry is a URL or a path under ``$MMENGINE_HOME``."""
    _, name = _scheme_and_name(filename)
    # Renamed models keep their old names as aliases (hub/deprecated.json).
    name = mmengine_checkpoint.get_deprecated_model_names().get(name, name)
    target = _zoo_url(
        filename, name, mmengine_checkpoint.get_external_models(),
        "mmengine's open-mmlab table (hub/openmmlab.json and "
        '$MMENGINE_HOME/open_mmlab.json)')
    if target.startswith(URL_PREFIXES):
        return load_from_url(target, map_location)
    # _get_mmengine_home is mmengine's one reader of $MMENGINE_HOME (and
    # its default); setup.py pins mmengine.
    home = mmengine_checkpoint._get_mmengine_home()
    return load_weights_only(osp.join(home, target), map_location)


def load_from_mmcls(filename: str, map_location: Optional[Any] = None) -> Any:
    """``mmcls://NAME``: mmengine's ``hub/mmcls.json``; the backbone part
    of the file, as mmengine returns it."""
    _, name = _scheme_and_name(filename)
    url = _zoo_url(filename, name, mmengine_checkpoint.get_mmcls_models(),
                   "mmengine's mmcls table (hub/mmcls.json)")
    # mmengine's own conversion (its backbone. entries), private to the
    # mmengine version setup.py pins.
    return mmengine_checkpoint._process_mmcls_checkpoint(
        load_from_url(url, map_location))


def refusing_loader(scheme: str) -> Callable:
    """A CheckpointLoader entry that refuses ``scheme`` with the reason and
    the way round."""

    # mmengine logs "Loads checkpoint by <name[10:]> backend": 'refused'.
    def load_from_refused(filename: str,
                          map_location: Optional[Any] = None) -> Any:
        raise ValueError(
            f'{filename}: checkpoints behind {scheme} are not read by '
            "dinov2-seg: mmengine's loader for them unpickles with a plain "
            'torch.load, which runs any code the file carries, and this '
            'project reads checkpoints only with weights_only=True, from '
            'local paths and http(s):// or file:// URLs. Copy the file to '
            'a local path (or a URL) and pass that.')

    return load_from_refused


# mmengine 0.10's CheckpointLoader schemes (its register_scheme prefixes,
# regular expressions matched at the start of a name) and what reads each;
# '' and the URL schemes are in safe_loading. A scheme that a newer
# mmengine adds is refused by install_safe_loading until it is listed here.
ZOO_SCHEMES: Dict[str, Callable] = {
    'torchvision://': load_from_torchvision,
    'modelzoo://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    'pavi://': refusing_loader('pavi://'),
    r'(\S+\:)?s3://': refusing_loader('s3://'),
    r'(\S+\:)?petrel://': refusing_loader('petrel://'),
}
