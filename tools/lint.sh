#!/usr/bin/env bash
# `make lint`: isort, yapf and flake8 over the project with the settings in
# setup.cfg. Installs the pinned linters into .venv on first use; with --fix
# it rewrites files (isort, then yapf) instead of only reporting.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${LINT_PYTHON:-.venv/bin/python}"
# Pinned so that a contributor, pre-commit and CI format alike.
LINTERS="flake8==7.5.0 isort==9.0.2 yapf==0.43.0"
PATHS=(dinov2_seg tools tests configs setup.py)

installed="$("$PY" -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("flake8", "isort", "yapf")))' 2>/dev/null || true)"
if [[ "$installed" != "$LINTERS" ]]; then
    echo "[lint] installing $LINTERS into $("$PY" -c 'import sys; print(sys.prefix)')"
    # shellcheck disable=SC2086  # several requirements
    "$PY" -m pip install --disable-pip-version-check -q $LINTERS
fi

if [[ "${1:-}" == "--fix" ]]; then
    "$PY" -m isort -q "${PATHS[@]}"
    "$PY" -m yapf -i -r -p "${PATHS[@]}"
fi
"$PY" -m isort --check-only --diff -q "${PATHS[@]}"
"$PY" -m yapf --diff -r -p "${PATHS[@]}"
"$PY" -m flake8 "${PATHS[@]}"
echo "[lint] clean: isort, yapf, flake8 (settings: setup.cfg)"
