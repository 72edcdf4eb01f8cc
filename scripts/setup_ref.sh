#!/usr/bin/env bash
# Creates .venv-ref in the repository (once): transformers 4.55.4 on torch's CPU build, from the locked
# set (locks/ref.txt). It is the reference the oracle tests compare with: transformers 4.55 is the last
# release with contrastive search and DoLa built into generate(). counterpoint is not installed here
# (it needs transformers 5); the tests save a model folder and run tests/ref_driver.py under
# .venv-ref/bin/python in a subprocess. Safe to run again: it reinstalls only when the lock or a setup
# script changed.
#
#   TORCH_SPEC, INSTALLER, PYTHON: as for scripts/setup.sh (see scripts/_lib.sh).
#   LOCK        lock file (default locks/ref.txt); LOCK=none resolves afresh (scripts/lock.py does).
#   VENV        the environment to build (default .venv-ref).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_lib.sh
VENV=${VENV:-.venv-ref}
LOCK=${LOCK:-locks/ref.txt}
REF_SPEC=transformers==4.55.4

make_venv "$VENV"
stamp=$VENV/.counterpoint-installed
want="$(stamp_of scripts/setup_ref.sh scripts/_lib.sh scripts/lock.py "$LOCK") $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setup_ref: installing $REF_SPEC into $VENV from $LOCK (by $INSTALLER)" >&2
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
write_constraints "$VENV" "$LOCK" "$constraints"
mapfile -t torch_req < <(torch_requirement "$VENV")
install_into "$VENV" -c "$constraints" "${torch_req[@]}" "$REF_SPEC"
record_resolved "$VENV"
check_lock "$VENV" "$LOCK"
"$VENV/bin/python" -c "import torch, transformers; print('setup_ref: transformers', transformers.__version__, 'torch', torch.__version__)" >&2
echo "$want" >"$stamp"
