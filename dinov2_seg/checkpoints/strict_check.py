"""Strict comparison of a checkpoint's tensors with a model's."""
from typing import Mapping, Sequence

from torch import Tensor

_SHOWN = 10  # keys listed per kind of problem


def _listing(title: str, keys: Sequence[str]) -> str:
    more = f' ... and {len(keys) - _SHOWN} more' if len(keys) > _SHOWN else ''
    return f'{title} ({len(keys)}): {", ".join(keys[:_SHOWN])}{more}'


def check_state_dict(expected: Mapping[str, Tensor],
                     state_dict: Mapping[str, Tensor],
                     source: str,
                     target: str,
                     hints: Sequence[str] = ()) -> None:
    """Raise a ValueError listing every missing, unexpected or mis-shaped key
    between ``state_dict`` (read from ``source``) and the ``expected``
    tensors of ``target``; ``hints`` are added to the message."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f'  {k}: file has {tuple(state_dict[k].shape)}, '
        f'{target} expects {tuple(v.shape)}' for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'Checkpoint {source} does not fit {target}.', *hints]
    if mismatched:
        lines += ['Shape mismatches:'] + mismatched[:_SHOWN]
        if len(mismatched) > _SHOWN:
            lines.append(f'  ... and {len(mismatched) - _SHOWN} more')
    if missing:
        lines.append(_listing('Missing keys', missing))
    if unexpected:
        lines.append(_listing('Unexpected keys', unexpected))
    raise ValueError('\n'.join(lines))
