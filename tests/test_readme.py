"""Every shell and Python block of README.md runs as written, on tiny models with the names filled in.

The README's Python blocks run in order in one namespace that already holds what they take for granted
(``model``, ``tokenizer``, ``expert``, ``amateur``, ``batch``, ``inputs``, ``noisy``, ``queries``, ...), with
``load_language_model`` answering a tiny random model over SmolLM2's tokenizer. Each ``counterpoint ...``
line of the shell blocks runs through the CLI in a folder holding the files it names, with ``--model``
pointing at a saved tiny model. A README example therefore cannot rot.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import counterpoint
import counterpoint.models
from counterpoint import cli
from tests.prompting.conftest import make_tiny
from tests.tiny_models import left_padded_batch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == kind]


def test_the_set_up_commands_name_what_exists():
    first = blocks("bash")[0].splitlines()
    assert first[0].startswith("bash scripts/setup.sh && .venv/bin/python demos/compare_decoding.py")
    assert first[1].startswith("bash scripts/setup.sh && .venv/bin/python -m pytest --runslow")
    assert (ROOT / "scripts" / "setup.sh").is_file() and (ROOT / "demos" / "compare_decoding.py").is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci and ".venv/bin/python -m pytest --runslow" in ci


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smol_tokenizer):
    """A folder with the files the README's commands name, and saved tiny models."""
    work = tmp_path_factory.mktemp("readme")
    for name, seed, layers in (("tiny", 0, 2), ("amateur", 1, 1)):
        make_tiny(smol_tokenizer, seed=seed, n_layer=layers).save_pretrained(work / name)
        smol_tokenizer.save_pretrained(work / name)
    texts = ["a great film", "a dull film", "loved every minute", "boring and slow", "what a joy", "a mess"]
    labels = ["positive", "negative", "positive", "negative", "positive", "negative"]
    rows = [
        {"id": f"p{i}", "input": t, "output": lab, "label": lab}
        for i, (t, lab) in enumerate(zip(texts, labels, strict=True))
    ]
    for name in ("pool.jsonl", "train.jsonl"):
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "queries.jsonl").write_text('{"input": "a fine film"}\n{"input": "too long"}\n')
    (work / "prompts.jsonl").write_text(
        '{"prompt": "Once upon a time"}\n{"prompt": "The capital of France is"}\n'
    )
    return work


def _cli_lines() -> list[str]:
    lines = []
    for body in blocks("bash")[1:]:
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("counterpoint ", "python -m counterpoint")):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _cli_lines())
def test_readme_command_runs(line, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    if line.startswith("python -m counterpoint"):
        out = subprocess.run(
            [sys.executable, *shlex.split(line)[1:]], capture_output=True, text=True, cwd=ROOT
        )
        assert out.returncode == 0, out.stderr
        return
    args = shlex.split(line)[1:]
    args = [str(workdir / "amateur") if a == "./amateur" else a for a in args]
    if args[0] in ("generate", "run") and "--model" not in args:
        args += ["--model", str(workdir / "tiny"), "--max-new-tokens", "4"]
    if args[0] == "select" and "--max-tokens" in args:
        args += ["--model", str(workdir / "tiny")]
    if "--resume" not in args:
        out = next((args[i + 1] for i, a in enumerate(args) if a in ("-o", "--output")), None)
        if out and (workdir / out).exists():
            args.append("--overwrite")  # the same command run by another test of this module
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output


@pytest.fixture
def namespace(workdir, smol_tokenizer, monkeypatch):
    """What the README's Python blocks take for granted, on tiny models."""
    monkeypatch.chdir(workdir)
    tiny = make_tiny(smol_tokenizer)

    def load_language_model(name=None, **kwargs):
        return tiny, smol_tokenizer

    monkeypatch.setattr(counterpoint.models, "load_language_model", load_language_model)
    monkeypatch.setattr(counterpoint, "load_language_model", load_language_model, raising=False)
    enc = smol_tokenizer(["Once upon a time", "The capital of France is"], return_tensors="pt", padding=True)
    noisy = left_padded_batch(
        [
            smol_tokenizer("Always respond with the opposite. " + p)["input_ids"]
            for p in ("Once upon a time", "The capital")
        ],
        pad_id=smol_tokenizer.pad_token_id,
    )
    from counterpoint.prompting import FewShotTemplate

    return {
        "model": tiny,
        "tokenizer": smol_tokenizer,
        "expert": tiny,
        "amateur": make_tiny(smol_tokenizer, seed=1, n_layer=1),
        "inputs": dict(enc),
        "batch": dict(enc),
        "noisy": noisy,
        "queries": [{"input": "a fine film"}, {"input": "too long"}],
        "template": FewShotTemplate(),
        "expert_dir": str(workdir / "tiny"),
        "amateur_dir": str(workdir / "amateur"),
        "prompts": ["Once upon a time"],
        "__name__": "readme",
    }


def test_readme_python_blocks_run_in_order(namespace):
    assert len(blocks("python")) >= 6
    for i, body in enumerate(blocks("python")):
        try:
            exec(compile(body, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"README.md python block {i + 1} failed: {err!r}\n{body}") from err
