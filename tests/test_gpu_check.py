"""tools/gpu_check.sh --rehearse: the GPU machine's one command, run on
this CPU with tiny models (no install, no build), so that it cannot rot:
every step, the gpu tests on the CPU, the rows' JSON lines, the budget's
skips and the exit status."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from helpers.tools import REPO

pytestmark = pytest.mark.slow  # the whole script in a subprocess


def rehearse(out, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['bash', 'tools/gpu_check.sh', '--rehearse', '--out',
         str(out), *args],
        cwd=REPO,
        env=dict(os.environ, PYTHON=sys.executable, **env),
        capture_output=True,
        text=True,
        timeout=850)


def tsv(path) -> list:
    return [line.split('\t') for line in path.read_text().splitlines()]


def test_rehearsal_runs_every_step_and_summarises(tmp_path):
    result = rehearse(tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    steps = {name: status for name, status, _ in tsv(tmp_path / 'steps.tsv')}
    assert steps == {
        'environment': 'ok',
        'install': 'skipped: rehearsal',
        'mmcv': 'skipped: rehearsal',
        'gpu-tests': 'ok',
        'benchmarks': 'ok'
    }
    # Every gpu test ran on the CPU: 10 families x 2 precisions, compile,
    # batched evaluation (EoMT's is CUDA-only), training of 4 head types.
    suite = ElementTree.parse(tmp_path / 'gpu_tests.xml').getroot()
    suite = suite if suite.tag == 'testsuite' else suite[0]
    counts = {
        k: int(suite.get(k))
        for k in ('tests', 'failures', 'errors', 'skipped')
    }
    assert counts == dict(tests=27, failures=0, errors=0, skipped=1)
    rows = tsv(tmp_path / 'rows.tsv')
    assert [status for _, status, _ in rows] == ['ok'] * 3
    records = [
        json.loads(line)
        for line in (tmp_path / 'benchmarks.jsonl').read_text().splitlines()
    ]
    assert [(r['mode'], r['batch'], r['amp'], r['device'])
            for r in records] == [('slide', 1, False, 'cpu'),
                                  ('slide', 2, True, 'cpu'),
                                  ('dataset', 3, True, 'cpu')]
    assert records[2]['images'] == 3
    summary = (tmp_path / 'summary.md').read_text()
    assert summary in log  # printed at the end too
    assert '| gpu-tests | ok |' in summary
    assert '| tiny linear, batch 2, bf16 | ok |' in summary
    assert f"images_per_second {records[0]['images_per_second']:.4g}" in (
        summary)


def test_budget_skips_steps_and_a_failed_test_step_fails_the_run(tmp_path):
    # 30 s: the gpu tests' 400 s budget does not fit, nor the rows'. Then
    # no test is collected (pytest exits 5), which must fail the command.
    result = rehearse(tmp_path, '--budget-s', '30')
    assert result.returncode == 0, result.stdout[-3000:]
    assert 'gpu-tests: skipped (budget 400 s,' in result.stdout
    steps = tsv(tmp_path / 'steps.tsv')
    assert steps[3][0] == 'gpu-tests'
    assert steps[3][1].startswith('skipped: needs 400 s, ')
    assert steps[-1][0] == 'benchmarks' and steps[-1][1].startswith('skipped')
    assert (tmp_path / 'summary.md').is_file()
    result = rehearse(
        tmp_path, '--skip', 'benchmarks', PYTEST_ADDOPTS='-k no_such_test')
    assert result.returncode == 1, result.stdout[-3000:]
    assert [s[:2] for s in tsv(tmp_path / 'steps.tsv')[3:]
            ] == [['gpu-tests', 'failed (exit 5)'],
                  ['benchmarks', 'skipped: --skip']]


def test_suite_deselects_the_gpu_tests_unless_m_names_them():
    """``make test`` (and ``-m "not slow"``) neither runs nor skips them
    (``-m gpu`` selects all 27: the rehearsal's junit report above)."""

    def collect(*args):
        result = subprocess.run([
            sys.executable, '-m', 'pytest', 'tests/test_gpu.py', '--co', '-q',
            '-p', 'no:cacheprovider', *args
        ],
                                cwd=REPO,
                                capture_output=True,
                                text=True,
                                timeout=300)
        return result.stdout.strip().splitlines()[-1]

    assert collect('-m',
                   'not slow').startswith('no tests collected (27 deselected)')
