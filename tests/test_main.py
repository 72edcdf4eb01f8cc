"""``python -m counterpoint`` runs the command line."""

import os
import subprocess
import sys
from pathlib import Path

import counterpoint

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, as pytest imports it
    return subprocess.run(
        [sys.executable, "-m", "counterpoint", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_python_dash_m_counterpoint_runs_the_cli():
    done = _run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"counterpoint, version {counterpoint.__version__}\n",
        "",
    )
    done = _run("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: python -m counterpoint [OPTIONS] COMMAND [ARGS]...\n")


def test_python_dash_m_counterpoint_reports_usage_errors_like_the_script():
    done = _run("no-such-command")
    assert done.returncode == 2
    assert done.stderr.endswith("Error: No such command 'no-such-command'.\n")


def test_the_modules_the_cli_starts_with_do_not_import_torch():
    """The CLI reports a bad name or file at once: models, io and errors leave torch to the functions needing it."""
    code = "import sys, counterpoint.models, counterpoint.io, counterpoint.errors; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (done.returncode, done.stdout) == (0, "[]\n")
