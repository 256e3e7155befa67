#!/usr/bin/env bash
# Idempotent environment set-up for dinov2-seg: a virtual env in the repository,
# torch (kept when already importable), mmcv 2.1.0 built from source with its
# compiled ops, and this package in editable mode.
#
# Environment knobs:
#   VENV        where the virtual env lives (default: .venv in the repo)
#   TORCH_SPEC  what pip installs when the env has no torch yet
#               (default: torch==2.13.0, the CPU wheel; a CUDA user passes
#               e.g. "torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124")
#   EXTRAS      extras of this package to install (default: test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-test}"
PY="$VENV/bin/python"
STAMP="$VENV/.dinov2_seg_ready"

# The stamp records what the env was built from; any change re-runs the pip steps.
want="$(cat "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha1sum | cut -d' ' -f1)-$EXTRAS"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$PY" -c "import mmcv.ops, dinov2_seg" 2>/dev/null; then
    exit 0
fi

if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtual env at $VENV"
    python3 -m venv "$VENV"
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options
    pip_install $TORCH_SPEC
fi

# mmcv 2.1.0 ships as source only; its setup.py imports pkg_resources and torch,
# hence old setuptools and no build isolation (see FACTS.md).
if ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
    echo "[setup] building mmcv 2.1.0 with ops (about 10 min on 2 cores the first time; pip caches the wheel)"
    pip_install "setuptools<70" wheel ninja
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install --no-build-isolation "mmcv==2.1.0"
    # Recent torch declares setuptools>=77; give it back once mmcv is built.
    pip_install --upgrade "setuptools>=77"
fi

echo "[setup] installing dinov2_seg (editable, extras: $EXTRAS)"
pip_install --no-build-isolation -e "$ROOT[$EXTRAS]"
"$PY" -c "import mmcv.ops, mmseg, mmdet, dinov2_seg" >/dev/null
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV"
