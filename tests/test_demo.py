"""`make demo`, the README's first command, as the README describes it:
the table it prints, about 70 lines, the pictures and plots it writes."""
import os
import signal
import subprocess

import pytest
from helpers.tools import REPO

DEMO_TIMEOUT = 780


def readme_demo_block() -> list:
    """The lines of the README's demo output block that do not depend on
    the work dir: the per-class table and the summary line."""
    text = (REPO / 'README.md').read_text()
    start = text.index('|  Class   |  IoU  |  Acc  |')
    block = text[start:text.index('```', start)].splitlines()
    return [line for line in block if line.startswith(('|', '+', 'aAcc'))]


@pytest.mark.slow
def test_make_demo_prints_the_readme_table_and_writes_its_files(tmp_path):
    work_dir = tmp_path / 'demo'
    # The demo takes about 1.5 minutes on 2 cores; past DEMO_TIMEOUT (under
    # pytest.ini's 900 s) the run is stopped, its whole process group with
    # it, and the test fails with what it printed so far.
    process = subprocess.Popen(['make', 'demo', f'DEMO_DIR={work_dir}'],
                               cwd=REPO,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f'make demo ran past {DEMO_TIMEOUT} s; its last lines:\n' +
                    '\n'.join(output.splitlines()[-40:]))
    result = subprocess.CompletedProcess(process.args, process.returncode,
                                         output)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, '\n'.join(lines[-40:])
    assert 50 <= len(lines) <= 80
    expected = readme_demo_block()
    assert len(expected) == 9 and 'mIoU: 94.59' in expected[-1]
    for line in expected:
        assert line in lines, f'README line not printed: {line!r}'
    assert list((work_dir / 'vis' / 'vis_data' / 'vis_image').glob('*.png'))
    for name in ('per_class_iou', 'confusion_matrix', 'class_distribution',
                 'curves'):
        assert (work_dir / 'plots' / f'{name}.png').stat().st_size > 0
    assert (work_dir / 'iter_150.pth').exists()
