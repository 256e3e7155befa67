#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) every wheel a lent GPU machine needs to
# run tools/gpu_check.sh with no network: this package's requirements and
# its test extra (setup.py), mmcv 2.1.0's, and theirs, for that machine's
# Python and platform, less its CUDA torch and what its image already has
# (tools/gpu_image_packages.txt); plus mmcv 2.1.0's source, which
# gpu_check.sh builds there. Versions: tools/gpu_constraints.txt. Then
# checks that the folder resolves completely and prints its size, which
# must travel with the repository in 64 MiB.
#
#   bash tools/gpu_wheels.sh [--python 3.12] [--glibc 2.35] [--dest .whl]
#                            [--present FILE|none]
# --present none: a machine with nothing but CUDA torch (every other
# package downloaded; measured far above 64 MiB, see docs/benchmarks.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
PYTHON_VERSION=3.12
GLIBC=2.35
DEST=.whl
PRESENT=tools/gpu_image_packages.txt
LIMIT_MIB=64
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PYTHON_VERSION="$2"; shift 2 ;;
        --glibc) GLIBC="$2"; shift 2 ;;
        --dest) DEST="$2"; shift 2 ;;
        --present) PRESENT="$2"; shift 2 ;;
        *) echo "gpu_wheels.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
present_args=()
[[ "$PRESENT" != none ]] && present_args=(--present "$PRESENT")
# Run as a file: the package's __init__ would import mmengine and torch.
helper() { "$PY" "$ROOT/dinov2_seg/cli/gpu_wheels.py" "$@"; }

# pip's options for the target: CPython X.Y, x86-64 Linux, every manylinux
# glibc level up to --glibc (pip matches each exactly).
target=(--only-binary=:all: --python-version "$PYTHON_VERSION"
        --implementation cp --abi "cp${PYTHON_VERSION/./}" --abi abi3 --abi none
        --platform linux_x86_64)
for ((n = ${GLIBC#2.}; n >= 5; n--)); do
    target+=(--platform "manylinux_2_${n}_x86_64")
done
target+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
helper requirements > "$work/requirements.txt"
echo "[gpu-wheels] resolving for CPython $PYTHON_VERSION, x86-64 Linux (glibc $GLIBC)"
"$PY" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
    --report "$work/report.json" --target "$work/target" "${target[@]}" \
    -c tools/gpu_constraints.txt -r "$work/requirements.txt"
helper select "$work/report.json" "${present_args[@]}" --python "$PYTHON_VERSION" \
    > "$work/pins.txt"
echo "[gpu-wheels] to download: $(tr '\n' ' ' < "$work/pins.txt")"

# A fresh folder: a wheel left from an earlier run would be a second version.
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$DEST" \
    "${target[@]}" -r "$work/pins.txt"
# The source only: `pip download` would build it to read its metadata,
# which needs torch and old setuptools here. pip's own index search and
# session fetch it instead, and the index's sha256 is checked.
"$PY" - "$DEST" <<'EOF'
import hashlib
import os.path as osp
import sys
from pip._internal.commands import create_command
from pip._vendor.packaging.specifiers import SpecifierSet
command = create_command('download')
options, _ = command.parse_args(['--no-binary', ':all:', '-q'])
with command.main_context():
    session = command.get_default_session(options)
    finder = command._build_package_finder(options, session)
    link = finder.find_best_candidate(
        'mmcv', SpecifierSet('==2.1.0')).best_candidate.link
    response = session.get(link.url_without_fragment)
    response.raise_for_status()
    if link.hash_name == 'sha256':
        assert hashlib.sha256(response.content).hexdigest() == link.hash, link
    with open(osp.join(sys.argv[1], link.filename), 'wb') as file:
        file.write(response.content)
EOF

helper check "$DEST" "${present_args[@]}" --python "$PYTHON_VERSION" --glibc "$GLIBC"
# What travels to the machine: the repository's tracked and untracked, not
# ignored files, and the carried folder.
repo_bytes=$(git ls-files -z --cached --others --exclude-standard \
    | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
whl_bytes=$(du -sb "$DEST" | cut -f1)
ls -l "$DEST" | awk 'NR > 1 {printf "  %9d  %s\n", $5, $9}'
total=$((repo_bytes + whl_bytes))
printf '[gpu-wheels] %s: %.2f MiB; repository %.2f MiB; together %.2f MiB (limit %d MiB)\n' \
    "$DEST" "$(echo "$whl_bytes / 1048576" | bc -l)" "$(echo "$repo_bytes / 1048576" | bc -l)" \
    "$(echo "$total / 1048576" | bc -l)" "$LIMIT_MIB"
if ((total > LIMIT_MIB * 1048576)); then
    echo "[gpu-wheels] too large to travel: over $LIMIT_MIB MiB" >&2
    exit 1
fi
