#!/usr/bin/env bash
# Idempotent set-up of .venv-timm, the environment in which the tests run
# timm's DINOv2 and DINOv3 and transformers' DINOv3ViTModel as independent
# references (tests/helpers/timm_reference.py, dinov3_timm_reference.py).
# It is separate because timm imports torchvision, and no torchvision wheel
# on PyPI works beside the CPU torch of .venv. Only torch, timm and
# transformers are used (transformers >= 4.56 has DINOv3, timm >= 1.0.20).
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
REFERENCES="timm>=1.0.20 transformers>=4.56"
want="$TIMM_TORCH_SPEC $REFERENCES"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] &&
    "$PY" -c "import timm, torchvision, transformers" 2>/dev/null; then
    exit 0
fi
[[ -x "$PY" ]] || python3 -m venv "$VENV"
echo "[setup] installing $TIMM_TORCH_SPEC $REFERENCES into $VENV (test references only)"
# shellcheck disable=SC2086  # the spec holds several requirements
"$PY" -m pip install --disable-pip-version-check -q $TIMM_TORCH_SPEC $REFERENCES
"$PY" -c "import timm, torchvision, transformers; transformers.DINOv3ViTModel" >/dev/null
echo "$want" > "$STAMP"
echo "[setup] ready: $VENV"
