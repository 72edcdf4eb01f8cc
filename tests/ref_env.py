"""The reference environment (.venv-ref, transformers 4.55.4) and its driver, for oracle tests.

A test saves a model folder, hands :func:`run_reference` jobs (forward passes, or ``generate()`` with
any keyword arguments) and compares the answers, computed by transformers 4.55.4 in a subprocess
(tests/ref_driver.py under .venv-ref/bin/python), with counterpoint's.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
DRIVER = Path(__file__).with_name("ref_driver.py")


def require_ref_python() -> Path:
    """The .venv-ref interpreter; skips on COUNTERPOINT_SKIP_REF=1, fails (naming the fix) when missing."""
    if os.environ.get("COUNTERPOINT_SKIP_REF") == "1":
        pytest.skip("COUNTERPOINT_SKIP_REF=1: oracle tests against transformers 4.55.4 skipped on request")
    if not REF_PYTHON.exists():
        pytest.fail(
            f"{REF_PYTHON} is missing: build it with `bash scripts/setup_ref.sh` "
            "(or set COUNTERPOINT_SKIP_REF=1 to skip the oracle tests against transformers 4.55.4)"
        )
    return REF_PYTHON


def batch_job(
    job_id: str, model_dir: str | Path, kind: str, batch: dict[str, torch.Tensor], **fields
) -> dict:
    """One driver job from a batch of tensors (``input_ids``, ``attention_mask``, optional ``position_ids``)."""
    job = {"id": job_id, "model": str(model_dir), "kind": kind}
    for name, value in batch.items():
        job[name] = value.tolist()
    return job | fields


def run_reference(jobs: list[dict], work: Path) -> dict:
    """Run the jobs in .venv-ref; returns the driver's output (see tests/ref_driver.py)."""
    python = require_ref_python()
    ids = [job["id"] for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"job ids must be unique, got {ids}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.json").write_text(json.dumps({"jobs": jobs}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # nothing from this checkout: the reference runs transformers 4.55.4 alone
    proc = subprocess.run(
        [str(python), str(DRIVER), str(work / "in.json"), str(work / "out.pt")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"ref_driver.py failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    out = torch.load(work / "out.pt", weights_only=True)
    if out["versions"]["transformers"] != "4.55.4":
        pytest.fail(f"{python} runs transformers {out['versions']['transformers']}, not 4.55.4: rebuild it")
    return out
