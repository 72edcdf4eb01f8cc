#!/usr/bin/env bash
# Builds .venv-newest afresh, every run: the newest releases pyproject.toml admits (what
# `pip install counterpoint` gets today), with the main environment's extras and model wheels; torch
# is held at TORCH_SPEC (the CPU build). CI runs the fast suite in it, so that an upstream release
# fails CI before it fails a user. Prints how the set differs from locks/main.txt.
#
#   TORCH_SPEC, INSTALLER, PYTHON, EXTRAS: as for scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-newest
VENV=.venv-newest LOCK=none WITH_VLLM=0 WITH_REF=0 bash scripts/setup.sh
echo "setup_newest: .venv-newest against locks/main.txt:" >&2
.venv-newest/bin/python scripts/lock.py diff locks/main.txt >&2
