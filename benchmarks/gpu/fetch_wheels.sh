#!/usr/bin/env bash
# Download, here (PyPI reachable), the wheels benchmarks/gpu/run.sh installs on the GPU machine (no network).
#
#   bash benchmarks/gpu/fetch_wheels.sh [DEST]        (default DEST: .whl, git-ignored; carry it to the device)
#
# What the GPU machine lacks (checked against /work/.library/device/KINDS.md, 2026-11): it has transformers
# 5.17.0, and counterpoint is locked to 5.24.0. transformers 5.24.0 needs huggingface-hub>=1.31,<3 (there:
# 1.33.0), tokenizers>=0.23.1,<0.24 (0.23.2), safetensors>=0.8.0 (0.8.0), regex>=2025.10.22 (transformers
# 5.17 there already needs the same), numpy, packaging, pyyaml, tqdm and typer (all there). So the one wheel
# is transformers itself. counterpoint's other pure-Python dependencies (gguf, bm25s) are not imported by the
# benchmark (run.sh checks that counterpoint.decoding and counterpoint.selection import there), and click is
# there anyway. The script prints each wheel's requirements so a change in a later version shows.
#
# Environment: PYTHON (default .venv/bin/python, else python3), TRANSFORMERS_VERSION (default 5.24.0),
# MAX_MIB (default 48: the working tree and the wheels travel together under 64 MiB).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/.whl}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
VERSION=${TRANSFORMERS_VERSION:-5.24.0}
MAX_MIB=${MAX_MIB:-48}
SPECS=("transformers==$VERSION")

local_version=$("$PYTHON" -c 'import transformers; print(transformers.__version__)' 2>/dev/null || true)
if [ -n "$local_version" ] && [ "$local_version" != "$VERSION" ]; then
    echo "warning: this environment has transformers $local_version, the wheel is $VERSION" >&2
fi

mkdir -p "$DEST"
# One version of each package: two wheels of one name stop the whole install there.
for spec in "${SPECS[@]}"; do
    name=${spec%%==*}
    for old in "$DEST/$name"-*.whl; do
        [ -e "$old" ] || continue
        case "$(basename "$old")" in "$name-${spec##*==}-"*) ;; *) echo "removing $old"; rm -f "$old" ;; esac
    done
done

"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${SPECS[@]}"

echo
for whl in "$DEST"/*.whl; do
    echo "$(basename "$whl") requires:"
    unzip -p "$whl" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/    /'
done
bytes=$(cat "$DEST"/*.whl | wc -c)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo
echo "total: $mib MiB in $(ls "$DEST"/*.whl | wc -l) wheel(s) in $DEST (limit $MAX_MIB MiB)"
if [ "$bytes" -gt $((MAX_MIB * 1048576)) ]; then
    echo "too large: the working tree and the wheels must travel under 64 MiB together" >&2
    exit 1
fi
