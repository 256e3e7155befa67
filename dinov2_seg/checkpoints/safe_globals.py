"""Let torch>=2.6 load mmengine checkpoints with ``weights_only=True``.

mmengine 0.10 calls ``torch.load`` without ``weights_only``; since torch 2.6
that means ``weights_only=True``, which rejects the numpy arrays and the
``HistoryBuffer`` objects that mmengine stores in every checkpoint's
``message_hub`` and ``meta``, so ``--resume`` and ``tools/test.py`` fail.
Instead of turning ``weights_only`` off (which would let any pickle run
code), this allowlists exactly the globals mmengine writes.
"""
import pickle
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# HistoryBuffer pickles its statistics table as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(owner: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` during weights-only loading: only
    HistoryBuffer's statistics methods may be looked up."""
    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(
        HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'weights_only load: refusing getattr({owner!r}, {name!r}); only '
        f'HistoryBuffer statistics {sorted(allowed)} may be looked up')


def _numpy_globals() -> list:
    multiarray = (getattr(np, '_core', None) or np.core).multiarray
    numeric = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    found = [np.ndarray, np.dtype, *{type(np.dtype(c)) for c in numeric}]
    # Files written under numpy 1.x name numpy.core, under 2.x numpy._core.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        found += [(multiarray._reconstruct, f'{module}._reconstruct'),
                  (multiarray.scalar, f'{module}.scalar')]
    return found


def allow_mmengine_checkpoints() -> None:
    """Allowlist the globals of mmengine checkpoints for ``torch.load``."""
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return  # torch<2.4 has no weights_only default to work around
    torch.serialization.add_safe_globals([
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        *_numpy_globals(),
    ])
