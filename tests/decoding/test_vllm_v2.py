"""vLLM Model Runner V2's logits-processor interface, played step by step (tests/decoding/vllm_v2_driver.py).

The V2 runner needs Triton on a GPU, so no engine runs it here; the driver plays the engine's side under
.venv-vllm (slots, the token table, a LogitsContext per step with rows reordered, chunked prefill, a plain
request, a finish and a slot reused) and compares every step with full recomputes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.vllm_env import ROOT, require_vllm_python

DRIVER = Path(__file__).with_name("vllm_v2_driver.py")


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    python = require_vllm_python()
    out = tmp_path_factory.mktemp("v2") / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(python), str(DRIVER), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(f"vllm_v2_driver.py failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())["steps"]


def test_every_step_is_the_contrast_of_full_recomputes(steps):
    assert len(steps) == 14
    assert max(s["max_diff"] for s in steps) < 1e-5
    assert all(s["plain_untouched"] for s in steps)  # requests without contrast settings keep their logits


def test_quiet_steps_read_nothing_back_from_the_device(steps):
    """Steady decoding (same requests, none prefilling): the tokens stay on the device."""
    quiet = [s for s in steps if s["quiet"]]
    assert len(quiet) >= 4
    assert [s["sites"] for s in quiet if s["reads"]] == []
    # Joins read the joining rows' tokens back, in one copy.
    assert any(s["reads"] and not s["quiet"] for s in steps)
