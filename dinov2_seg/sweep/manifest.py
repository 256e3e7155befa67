"""A sweep's records on disk: ``sweep.json`` in the sweep's folder (the
base config and its hash, the grid, every run's command, state and
results) and ``sweep_run.json`` in each run's work dir, which the run
itself keeps up to date (so that runs on other machines need no shared
writer); the sweep reads the run files back into its manifest."""
import hashlib
import json
import os
import os.path as osp
import socket
from typing import Any, Dict, List, Optional

from mmengine.config import Config

MANIFEST = 'sweep.json'
RUN_FILE = 'sweep_run.json'
# The states of a run, in sweep.json and in its run file.
PENDING, RUNNING, DONE, FAILED = 'pending', 'running', 'done', 'failed'


def write_json(path: str, data: Any) -> None:
    """Write through a temporary file and a rename, so that a killed
    process leaves the previous file or the new one, never half of one."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w', encoding='utf-8') as file:
        json.dump(data, file, indent=1, default=str)
    os.replace(temporary, path)


def read_json(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f'{path} is not valid JSON ({error}); it is '
                             "written by tools/sweep.py: restore it or "
                             'start a new sweep with --new') from error


def flatten_config(value: Any, prefix: str = '') -> Dict[str, str]:
    """A config as ``{dotted.key: repr(value)}``; lists of dicts (hooks,
    schedulers, pipelines) are flattened by position."""
    flat: Dict[str, str] = {}
    if isinstance(value, dict):
        for key in value:
            flat.update(flatten_config(value[key], f'{prefix}{key}.'))
    elif isinstance(value,
                    (list, tuple)) and any(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            flat.update(flatten_config(item, f'{prefix}{index}.'))
    else:
        flat[prefix[:-1]] = repr(value)
    return flat


def config_fingerprint(path: str) -> Dict[str, Any]:
    """The base config resolved with its ``_base_`` files (so that an edit
    of a base file counts) as flat settings, and their SHA-256."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Config file {path} does not exist')
    cfg = Config.fromfile(path, import_custom_modules=False)
    flat = flatten_config(cfg.to_dict())
    text = json.dumps(flat, sort_keys=True)
    return dict(hash=hashlib.sha256(text.encode()).hexdigest(), settings=flat)


def describe_changes(old: Dict[str, str],
                     new: Dict[str, str],
                     limit: int = 5) -> str:
    """``key: old -> new`` for the first ``limit`` settings that differ."""
    keys = sorted(set(old) | set(new))
    changed = [k for k in keys if old.get(k) != new.get(k)]
    shown = [
        f'{k}: {old.get(k, "(absent)")} -> {new.get(k, "(absent)")}'
        for k in changed[:limit]
    ]
    more = len(changed) - len(shown)
    return '; '.join(shown) + (f' (and {more} more)' if more > 0 else '')


def refuse_changed_sweep(old: dict, new: dict, sweep_dir: str) -> None:
    """Raise if ``new`` (this invocation) is not the sweep ``old`` records:
    another base config, grid, seeds or test arguments."""
    problems: List[str] = []
    if old['base_config_hash'] != new['base_config_hash']:
        problems.append('the base config changed (' + describe_changes(
            old['base_config_settings'], new['base_config_settings']) + ')')
    for field in ('base_config', 'grid', 'seeds', 'test_args'):
        if old[field] != new[field]:
            problems.append(
                f'{field} changed: {old[field]!r} -> {new[field]!r}')
    if problems:
        raise ValueError(
            f'{osp.join(sweep_dir, MANIFEST)} records another sweep: ' +
            '; '.join(problems) + '. Its runs would not be comparable: give '
            '--new to start it afresh (the old runs are moved aside), or '
            'another --name')


def run_file(work_dir: str) -> str:
    return osp.join(work_dir, RUN_FILE)


def update_run_file(work_dir: str, **fields) -> dict:
    """Merge ``fields`` into a run's ``sweep_run.json`` (with this host
    and process id when the run is running)."""
    record = read_json(run_file(work_dir)) or {}
    record.update(fields)
    if fields.get('state') == RUNNING:
        record.update(host=socket.gethostname(), pid=os.getpid())
    write_json(run_file(work_dir), record)
    return record
