#!/usr/bin/env bash
# Builds .venv-oldest: the locked set (locks/main.txt) with transformers moved to the lower bound that
# pyproject.toml declares; whatever else that release needs moves with it, the rest stays at the lock.
# CI runs the fast suite in it, so that the bound pyproject.toml promises is one CI tests. Safe to run
# again. Prints how the set differs from locks/main.txt.
#
#   TORCH_SPEC, INSTALLER, PYTHON, EXTRAS: as for scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_lib.sh
VENV=.venv-oldest
VENV=$VENV WITH_VLLM=0 WITH_REF=0 bash scripts/setup.sh
bound=$("$PYTHON" scripts/lock.py lower-bound transformers)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
write_constraints "$VENV" none "$constraints"
install_into "$VENV" -c "$constraints" "transformers==$bound"
"$VENV/bin/python" - "$bound" <<'PY'
import sys
import transformers
if transformers.__version__ != sys.argv[1]:
    sys.exit(f"setup_oldest: transformers {transformers.__version__} installed, not {sys.argv[1]}")
PY
echo "setup_oldest: .venv-oldest (transformers $bound) against locks/main.txt:" >&2
"$VENV/bin/python" scripts/lock.py diff locks/main.txt >&2
