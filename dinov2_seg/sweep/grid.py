"""The runs of a sweep: the cartesian product of ``--set KEY=V1,V2`` values
times the seeds, each with a readable, stable work-dir name."""
import ast
import hashlib
import itertools
import re
from typing import Any, Dict, List, Sequence, Tuple

# Longer values are cut and given a hash, so that names stay short and
# two long values never share a name.
MAX_VALUE_CHARS = 24
SEED_KEY = 'randomness.seed'


def split_values(text: str) -> List[str]:
    """Split ``text`` at the commas outside brackets and quotes:
    ``'1,[2,3],"a,b"'`` -> ``['1', '[2,3]', '"a,b"']``."""
    parts, depth, quote, start = [], 0, '', 0
    for i, char in enumerate(text):
        if quote:
            quote = '' if char == quote else quote
        elif char in '\'"':
            quote = char
        elif char in '([{':
            depth += 1
        elif char in ')]}':
            depth -= 1
        elif char == ',' and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_value(text: str) -> Any:
    """A Python literal (number, bool, None, list, tuple, quoted string)
    or else the text itself, as ``--cfg-options`` reads plain words."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(settings: Sequence[str]) -> Dict[str, List[Any]]:
    """``['KEY=V1,V2', ...]`` -> ``{KEY: [V1, V2]}`` in the given order."""
    grid: Dict[str, List[Any]] = {}
    for setting in settings:
        key, sep, values = setting.partition('=')
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ValueError(f'--set {setting!r}: expected KEY=V1,V2,...')
        if key in grid:
            raise ValueError(f'--set {key} is given twice')
        if key == SEED_KEY:
            raise ValueError(f'--set {SEED_KEY}: give the seeds with --seeds')
        grid[key] = [parse_value(v) for v in split_values(values)]
    return grid


def parse_seeds(text: str) -> List[int]:
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise ValueError(f'--seeds {text!r}: expected integers such as '
                         '0,1,2') from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds {text!r} repeats a seed')
    return seeds


def format_value(value: Any) -> str:
    """How a value is written on the command line (``--cfg-options``)."""
    if isinstance(value, str):
        return value
    return repr(value).replace(' ', '')


def _short_keys(keys: Sequence[str]) -> Dict[str, str]:
    """The last part of each dotted key, or more parts where two keys
    would share it."""
    depth = 1
    while True:
        short = {k: '.'.join(k.split('.')[-depth:]) for k in keys}
        if len(set(short.values())) == len(short) or depth > 16:
            return short
        depth += 1


def _name_part(value: Any) -> str:
    text = re.sub(r'[^A-Za-z0-9.+-]+', '-', format_value(value)).strip('-')
    if len(text) > MAX_VALUE_CHARS or not text:
        digest = hashlib.sha1(format_value(value).encode()).hexdigest()[:8]
        text = f'{text[:MAX_VALUE_CHARS - 9]}-{digest}'.lstrip('-')
    return text


def run_name(overrides: Dict[str, Any], seed: int, short: Dict[str,
                                                               str]) -> str:
    """``lr-0.001_crop_size-224_seed-0``: the last part of each key, its
    value, the seed."""
    parts = [f'{short[k]}-{_name_part(v)}' for k, v in overrides.items()]
    return '_'.join(parts + [f'seed-{seed}'])


def expand_runs(grid: Dict[str, List[Any]],
                seeds: Sequence[int]) -> List[Tuple[str, Dict[str, Any], int]]:
    """(name, overrides, seed) of every run: grid order, then seeds."""
    short = _short_keys(list(grid))
    runs = []
    for values in itertools.product(*grid.values()):
        overrides = dict(zip(grid, values))
        for seed in seeds:
            runs.append((run_name(overrides, seed, short), overrides, seed))
    names = [name for name, _, _ in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'two runs would share the work dir {duplicates[0]}: '
                         'a --set value is repeated')
    return runs
