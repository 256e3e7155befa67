#!/usr/bin/env bash
# Idempotent set-up of .venv-timm, the environment in which the tests run
# timm's DINOv2 as an independent reference (tests/helpers/timm_reference.py).
# It is separate because timm imports torchvision, and no torchvision wheel
# on PyPI works beside the CPU torch of .venv. Only torch and timm are used.
#
#   TIMM_VENV        where it lives (default: .venv-timm in the repo)
#   TIMM_TORCH_SPEC  torch + torchvision pair to install
#                    (default: torch==2.14.1 torchvision==0.29.1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TIMM_VENV:-$ROOT/.venv-timm}"
TIMM_TORCH_SPEC="${TIMM_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
PY="$VENV/bin/python"
STAMP="$VENV/.ready"
want="$TIMM_TORCH_SPEC timm"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] &&
    "$PY" -c "import timm, torchvision" 2>/dev/null; then
    exit 0
fi
[[ -x "$PY" ]] || python3 -m venv "$VENV"
echo "[setup] installing $TIMM_TORCH_SPEC and timm into $VENV (test reference only)"
# shellcheck disable=SC2086  # the spec holds several requirements
"$PY" -m pip install --disable-pip-version-check -q $TIMM_TORCH_SPEC timm
"$PY" -c "import timm, torchvision" >/dev/null
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV"
