#!/usr/bin/env bash
# The whole GPU check in one command (benchmarks/gpu/README.md): install the carried wheels with no network,
# then run benchmarks/gpu/bench_gpu.py, which writes gpu_bench.json and gpu_bench.md to the output folder.
#
#   bash benchmarks/gpu/run.sh [--wheels DIR] [--out DIR] [--no-install] [bench_gpu.py options...]
#
#   --wheels DIR   wheels to install first (default: .whl, filled by benchmarks/gpu/fetch_wheels.sh)
#   --out DIR      output folder (default: benchmarks/results/gpu); the log goes there too (run.log)
#   --no-install   use the Python environment as it is (the dry run in the test suite does)
#   --limit-s N    hard limit on the benchmark process (default 450: with the install, under 8 minutes)
#   anything else  passed to bench_gpu.py (e.g. --device cpu --tiny, --sections llama8b, --budget-s 300)
#
# Environment: PYTHON (default python3), TRANSFORMERS_VERSION (the version the wheels must give; default
# 5.24.0, the project's locked one), SITE (install target; default /tmp/counterpoint-site).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
PYTHON=${PYTHON:-python3}
WANT=${TRANSFORMERS_VERSION:-5.24.0}
SITE=${SITE:-/tmp/counterpoint-site}
WHEELS=.whl
OUT=benchmarks/results/gpu
INSTALL=1
LIMIT_S=450
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --limit-s) LIMIT_S=$2; shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done
mkdir -p "$OUT" || exit 1
LOG="$OUT/run.log"
: >"$LOG"
say() { echo "[run.sh $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
START=$(date +%s)

if [ "$INSTALL" = 1 ]; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [ ${#wheels[@]} -eq 0 ]; then
        say "no wheels in '$WHEELS': run benchmarks/gpu/fetch_wheels.sh here first and carry that folder"
        exit 3
    fi
    say "installing ${#wheels[@]} wheel(s) from $WHEELS into $SITE (no network)"
    rm -rf "$SITE"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}" 2>&1 | tee -a "$LOG"; then
        say "pip install failed"
        exit 4
    fi
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# Fail in seconds, not minutes, when the environment is not the one the numbers are meant for.
if ! "$PYTHON" - "$WANT" "$INSTALL" <<'EOF' 2>&1 | tee -a "$LOG"; then
import sys
import torch
import transformers
want, installed = sys.argv[1], sys.argv[2] == "1"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__} "
      f"from {transformers.__file__}, CUDA available: {torch.cuda.is_available()}")
if installed and transformers.__version__ != want:
    sys.exit(f"transformers {transformers.__version__} was imported, not {want}: the carried wheel did not win")
import counterpoint.decoding  # noqa: F401  (every module the benchmark imports must import here)
import counterpoint.selection  # noqa: F401
EOF
    say "environment check failed"
    exit 5
fi
say "environment ready in $(($(date +%s) - START)) s"

status=0
timeout -k 10 "$LIMIT_S" "$PYTHON" -u benchmarks/gpu/bench_gpu.py --out "$OUT" ${PASS[@]+"${PASS[@]}"} 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    say "bench_gpu.py ran past ${LIMIT_S}s and was stopped; the files hold every section that finished"
fi
say "done in $(($(date +%s) - START)) s (exit $status); files: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"
