"""Every bad input in tests/prompting/cli_error_cases.py gets its one line, exactly, and nothing loads first
that the case does not allow; docs/errors.md is generated from the same list."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import counterpoint.models
from counterpoint import cli
from tests.prompting.cli_error_cases import CASES

ROOT = Path(__file__).resolve().parents[2]
LONG = " ".join(["hello"] * 300)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    (tmp_path / "noprompt.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "empty_prompt.jsonl").write_text('{"prompt": "ok"}\n{"prompt": "  "}\n')
    (tmp_path / "q.jsonl").write_text('{"input": "a dog"}\n{"input": "a cat"}\n')
    (tmp_path / "pool.jsonl").write_text(
        "".join(f'{{"input": "example {i}", "output": "{i}"}}\n' for i in range(6))
    )
    (tmp_path / "existing.jsonl").write_text('{"index": 0, "prompt": "x", "output": "y"}\n')
    (tmp_path / "empty_dir").mkdir()
    return tmp_path


@pytest.fixture
def loads(monkeypatch):
    """Records which of: config reads, model loads, embedder loads succeed (a refused name loads nothing)."""
    seen: list[str] = []
    for name, kind in [
        ("read_model_config", "config"),
        ("load_language_model", "model"),
        ("load_embedder", "model"),
    ]:
        real = getattr(counterpoint.models, name)

        def wrapper(*args, _real=real, _kind=kind, **kwargs):
            out = _real(*args, **kwargs)
            seen.append(_kind)
            return out

        monkeypatch.setattr(counterpoint.models, name, wrapper)
    return seen


@pytest.mark.parametrize(("name", "args", "code", "message", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_user_errors_are_one_line(
    files, loads, tiny_model_dir, smol_tokenizer, name, args, code, message, allowed
):
    model = str(tiny_model_dir)
    args = [a.replace("{tmp}", str(files)).replace("{model}", model).replace("{long}", LONG) for a in args]
    if args[0] != "select" and "--model" not in args:
        args += ["--model", model]
    message = message.replace("{tmp}", str(files))
    if "{long}" in message or "prompt tokens" in message:
        n = len(smol_tokenizer(LONG)["input_ids"])
        message = message.replace("300 prompt tokens", f"{n} prompt tokens")
    result = CliRunner().invoke(cli.main, args)
    assert (result.exit_code, result.stderr, result.stdout) == (code, f"Error: {message}\n", "")
    assert isinstance(result.exception, SystemExit)  # no traceback
    order = ["nothing", "config", "model"]
    happened = max((order.index(k) for k in loads), default=0)
    assert happened <= order.index(allowed), f"{name}: {loads} happened before the error"


def test_every_numeric_flag_reaches_the_library_as_given(files, tiny_model_dir, monkeypatch):
    """0 and each boundary value reach the strategy as typed: nothing is swapped for a default."""
    from counterpoint.decoding import get_backend
    from counterpoint.decoding.registry import options_by_name

    received = []

    class Stop(Exception):
        pass

    backend = get_backend("transformers")
    real_check = backend.check.__func__

    def check(cls, strategy, options=None):
        received.append(dict(options or {}))
        real_check(cls, strategy, options)
        raise Stop

    monkeypatch.setattr(backend, "check", classmethod(check))
    for name, uses in options_by_name().items():
        strategy, option = uses[0]
        if option.type not in ("float", "int"):
            continue
        flag = "--" + name.replace("_", "-")
        extra = (
            ["--amateur", str(tiny_model_dir)]
            if strategy == "contrastive-decoding" and name != "amateur"
            else []
        )
        extra += ["--layers", "1"] if strategy == "layer-contrast" and name != "layers" else []
        for value in ("0", "1", "0.5" if option.type == "float" else "2"):
            received.clear()
            result = CliRunner().invoke(
                cli.main, ["generate", "--strategy", strategy, *extra, flag, value, "x"]
            )
            assert received, (flag, value, result.stderr)
            got = received[-1][name]
            assert got == (float(value) if option.type == "float" else int(value)), (flag, value, got)
            if isinstance(result.exception, Stop):
                continue  # the strategy took it
            assert result.exit_code == 2 and result.stderr.startswith(f"Error: {flag} {float(value) if option.type == 'float' else value} "), (
                flag, value, result.stderr,
            )  # fmt: skip


def _gen_script():
    spec = importlib.util.spec_from_file_location("gen_error_docs", ROOT / "scripts" / "gen_error_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_errors_md_is_generated_from_the_cases():
    assert (ROOT / "docs" / "errors.md").read_text(encoding="utf-8") == _gen_script().render(), (
        "docs/errors.md is stale: run python scripts/gen_error_docs.py"
    )


def test_cases_are_json_safe_and_unique():
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names)
    json.dumps(CASES)
