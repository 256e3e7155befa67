#!/usr/bin/env bash
# One command for a lent GPU machine (CUDA torch, no network), run from the
# repository root with .whl/ beside it (tools/gpu_wheels.sh):
#   1. install: the wheels, offline, into a target folder; the folder is
#      checked against what the machine has;
#   2. mmcv: builds mmcv 2.1.0 from its source there (CPU ops by default;
#      --mmcv-cuda: CUDA ops for this GPU's architecture, timed);
#   3. gpu-tests: pytest -m gpu (tests/test_gpu.py: every family on CUDA
#      against the CPU, --compile, batched evaluation, --amp training);
#   4. benchmarks: the pending GPU rows, JSON lines (dinov2_seg/cli/
#      gpu_benchmarks.py) through tools/benchmark.py's main;
#   5. summary: a markdown table of the steps and rows (also in OUT).
# Each step has a budget; a step that would pass the global budget is
# skipped with a line saying so. Exits non-zero if a GPU test failed (or
# the install or the build did).
#
#   bash tools/gpu_check.sh [--budget-s 540] [--out DIR] [--mmcv-cuda]
#                           [--skip STEP[,STEP...]]
# --skip: e.g. install,mmcv on a machine that still has them from a run
# before (GPU_CHECK_SITE, default /tmp/gpu_check_site).
#   bash tools/gpu_check.sh --rehearse [--out DIR]   # on this CPU, tiny
# --rehearse: the same steps on the CPU with this machine's env (no
# install, no build), the gpu tests on GPU_CHECK_DEVICE=cpu, 3 tiny rows.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUDGET=540
OUT="${OUT:-work_dirs/gpu_check}"
REHEARSE=0
MMCV_CUDA=0
SKIP=,
while [[ $# -gt 0 ]]; do
    case "$1" in
        --budget-s) BUDGET="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --rehearse) REHEARSE=1; shift ;;
        --mmcv-cuda) MMCV_CUDA=1; shift ;;
        --skip) SKIP=",$2,"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/steps.tsv "$OUT"/rows.tsv "$OUT"/benchmarks.jsonl "$OUT"/summary.md
if ((REHEARSE)); then
    PY="${PYTHON:-.venv/bin/python}"
    export GPU_CHECK_DEVICE=cpu
else
    PY="${PYTHON:-python3}"
    export GPU_CHECK_DEVICE=cuda
fi
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
((REHEARSE)) || export PYTHONPATH="$SITE:$PYTHONPATH"
export PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=0

note() { echo "[gpu-check] $*"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$OUT/steps.tsv"; }
# step NAME BUDGET_S COMMAND...: runs COMMAND under its budget, or skips it
# when it would pass the global one; records the outcome.
step() {
    local name="$1" budget="$2" used left started rc outcome
    shift 2
    if [[ "$SKIP" == *",$name,"* ]]; then
        note "$name: skipped (--skip)"
        record "$name" "skipped: --skip" 0
        return 0
    fi
    used=$((SECONDS - START))
    left=$((BUDGET - used))
    if ((budget > left)); then
        note "$name: skipped (budget ${budget} s, ${left} s of ${BUDGET} s left)"
        record "$name" "skipped: needs ${budget} s, ${left} s left" 0
        return 0
    fi
    note "$name: started (budget ${budget} s)"
    started=$SECONDS
    # A function runs in a child bash (exported below) so that timeout can
    # stop it with everything it started.
    timeout --kill-after=10 "$budget" bash -c '"$@"' _ "$@"
    rc=$?
    case $rc in
        0) outcome=ok ;;
        124 | 137) outcome="timed out after ${budget} s" ;;
        *) outcome="failed (exit $rc)" ;;
    esac
    note "$name: $outcome in $((SECONDS - started)) s"
    record "$name" "$outcome" "$((SECONDS - started))"
    return $rc
}

environment() {
    "$PY" - <<'EOF'
import platform, torch
print(f'[gpu-check] Python {platform.python_version()}, torch {torch.__version__}')
if torch.cuda.is_available():
    print(f'[gpu-check] {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}')
EOF
    if [[ "$GPU_CHECK_DEVICE" == cuda ]]; then
        "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
            || { note "no CUDA device"; return 1; }
    fi
}

install_wheels() {
    [[ -d .whl ]] || { note ".whl/ is missing: run tools/gpu_wheels.sh where pip works"; return 1; }
    local version
    version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    rm -rf "$SITE" "$SITE-build" && mkdir -p "$SITE" "$SITE-build"
    local pip=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir
               --disable-pip-version-check)
    # setuptools<70 apart, for mmcv's build only: the rest keeps the
    # machine's own.
    "$PY" "${pip[@]}" --target "$SITE-build" .whl/setuptools-*.whl || return 1
    find .whl -type f -name '*.whl' ! -name 'setuptools-*' -print0 \
        | xargs -0 "$PY" "${pip[@]}" --target "$SITE" || return 1
    # Against what this machine really has (its interpreter's packages); a
    # gap is reported, and the tests show whether it matters.
    "$PY" dinov2_seg/cli/gpu_wheels.py check .whl --installed --python "$version" \
        || note "wheel check: requirements unmet (above); going on"
}

build_mmcv() {
    local site_cuda=()
    if ((MMCV_CUDA)); then
        local arch
        arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
        site_cuda=(env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch")
        note "mmcv: CUDA ops for sm ${arch/./}"
    else
        # Hidden GPU: mmcv's setup.py then compiles the CPU ops only.
        site_cuda=(env CUDA_VISIBLE_DEVICES=)
    fi
    # setuptools<70 from the folder, first on the path, for mmcv's setup.py.
    "${site_cuda[@]}" MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" \
        PYTHONPATH="$SITE-build:$PYTHONPATH" \
        "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
        --no-cache-dir --disable-pip-version-check --target "$SITE" \
        .whl/mmcv-2.1.0.tar.gz || return 1
    "$PY" -c 'import mmcv.ops, mmseg, mmdet; print("[gpu-check] mmcv", mmcv.__version__, "imports")'
}

gpu_tests() {
    set -o pipefail  # pytest's status, not tee's (a child bash runs this)
    "$PY" -m pytest tests/test_gpu.py -m gpu -n 0 -p no:cacheprovider -q \
        -o addopts="" --timeout 300 --junitxml "$OUT/gpu_tests.xml" \
        2>&1 | tee "$OUT/gpu_tests.log"
}

benchmarks() {
    local left="$1" rehearse=()
    ((REHEARSE)) && rehearse=(--rehearse)
    "$PY" -m dinov2_seg.cli.gpu_benchmarks run --out-dir "$OUT" \
        --budget-s "$left" "${rehearse[@]}"
}

export -f note environment install_wheels build_mmcv gpu_tests benchmarks
export PY OUT SITE MMCV_CUDA REHEARSE

step environment 30 environment || FAILED=1
if ((REHEARSE)); then
    note "install: skipped (rehearsal: this machine's env)"
    record install "skipped: rehearsal" 0
    note "mmcv: skipped (rehearsal: this machine's build)"
    record mmcv "skipped: rehearsal" 0
else
    step install 90 install_wheels || FAILED=1
    ((MMCV_CUDA)) && mmcv_budget=420 || mmcv_budget=300
    if ((FAILED)); then
        note "mmcv: skipped (the install failed)"
        record mmcv "skipped: the install failed" 0
    else
        step mmcv "$mmcv_budget" build_mmcv || FAILED=1
    fi
fi
if ((FAILED)); then
    note "gpu-tests, benchmarks: skipped (the environment is not ready)"
    record gpu-tests "skipped: no environment" 0
else
    # The rehearsal's budget is for a loaded 2-core machine (the suite's).
    ((REHEARSE)) && test_budget=400 || test_budget=180
    step gpu-tests "$test_budget" gpu_tests || FAILED=1
    # What is left, less the summary's seconds; the rows skip themselves.
    left=$((BUDGET - (SECONDS - START) - 15))
    if ((left > 20)); then
        step benchmarks "$left" benchmarks "$((left - 10))"
    else
        note "benchmarks: skipped (${left} s left)"
        record benchmarks "skipped: ${left} s left" 0
    fi
fi
# Files in OUT come back at most 16 MiB each: keep the end of a longer log.
for file in "$OUT"/*; do
    if [[ -f "$file" ]] && (($(stat -c %s "$file") > 16 * 1024 * 1024)); then
        tail -c $((16 * 1024 * 1024 - 1024)) "$file" > "$file.tail" && mv "$file.tail" "$file"
    fi
done
echo
"$PY" dinov2_seg/cli/gpu_benchmarks.py summary --out-dir "$OUT"
note "total $((SECONDS - START)) s of ${BUDGET} s; results in $OUT"
exit $FAILED
