"""Where the vLLM environment is, for the tests that drive it in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def require_vllm_python() -> Path:
    """The .venv-vllm interpreter; skips on COUNTERPOINT_SKIP_VLLM=1, fails (naming the fix) when missing."""
    if os.environ.get("COUNTERPOINT_SKIP_VLLM") == "1":
        pytest.skip("COUNTERPOINT_SKIP_VLLM=1: vLLM backend tests skipped on request")
    if not VLLM_PYTHON.exists():
        pytest.fail(
            f"{VLLM_PYTHON} is missing: build it with `bash scripts/setup_vllm.sh` "
            "(or set COUNTERPOINT_SKIP_VLLM=1 to skip the vLLM backend tests)"
        )
    return VLLM_PYTHON
