import os
import sys
from pathlib import Path

import pytest
import torch
from mmseg.utils import register_all_modules

import dinov2_seg.datasets  # noqa: F401  (registers transforms)
import dinov2_seg.models  # noqa: F401  (registers modules; safe globals)

register_all_modules(init_default_scope=True)
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) > 1:
    # pytest-xdist runs a worker per core: a second torch thread per worker
    # (and per tool it starts) only waits for a busy core. Measured on 2
    # cores: one process of 2 threads took 18:25 for the suite, 2 workers
    # of 2 threads 16:02, 2 workers of 1 thread 12:47 (make demo prints
    # the same numbers on 1 thread as on 2).
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """The ``gpu`` tests (tools/gpu_check.sh) run only when ``-m`` names
    them: the suite (also ``-m "not slow"``) neither runs nor skips them."""
    if 'gpu' in (config.getoption('markexpr') or ''):
        return
    deselected = [item for item in items if item.get_closest_marker('gpu')]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> Path:
    """A small procedural dataset in the ADE20K layout."""
    from dinov2_seg.datasets import generate_shapes_dataset
    root = tmp_path_factory.mktemp('shapes')
    generate_shapes_dataset(
        str(root), num_train=8, num_val=4, size=(90, 125), seed=1)
    return root


@pytest.fixture(scope='session')
def voc_root(tmp_path_factory) -> Path:
    """A small dataset in the VOC 2012 layout (palette PNG labels with 255
    borders; train and val splits of 3 images)."""
    from helpers.fabricate import fabricate_voc_dataset
    root = tmp_path_factory.mktemp('VOC2012')
    fabricate_voc_dataset(root)
    return root


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(autouse=True)
def _log_files_closed_after_each_test():
    """mmengine keeps every MMLogger of the process (the last one is
    'current', which mmengine's own print_log writes to) with its
    FileHandler, and a handler reopens its file on the next record. Once a
    passing test's tmp dir is deleted (tmp_path_retention_policy), a later
    test in the same worker that logs (e.g. FileClient's deprecation
    notice) failed with FileNotFoundError on the earlier test's log file.
    Each test's log files are therefore closed and detached after it."""
    yield
    import logging

    from mmengine.logging import MMLogger
    for logger in list(MMLogger._instance_dict.values()):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                logger.removeHandler(handler)
