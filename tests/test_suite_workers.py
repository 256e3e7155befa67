"""`make test` runs a pytest-xdist worker per core; each worker, and each
tool it starts, computes on one torch thread (docs/development.md)."""
import os
import subprocess
import sys

import torch


def test_torch_threads_follow_the_worker_count():
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    tool_threads = subprocess.run(
        [sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],
        capture_output=True,
        text=True,
        check=True).stdout.strip()
    if workers > 1:
        assert torch.get_num_threads() == 1
        assert tool_threads == '1'
    else:
        assert torch.get_num_threads() == min(2, os.cpu_count() or 1)
