"""CLI and pipeline wiring of the decoding strategies and of the selection module."""

import json

import pytest
import torch
from click.testing import CliRunner

from counterpoint import cli
from counterpoint.models import load_language_model
from counterpoint.prompting import FewShotTemplate
from tests.prompting.test_pipeline import POOL, QUERIES

PROMPT = "Once upon a time there was"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_language_model(tiny_model_dir)


def continuation(model, tokenizer, prompt, n, **kwargs):
    enc = tokenizer([prompt], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, **kwargs)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_contrastive_search(tiny_model_dir, tiny):
    from counterpoint.decoding import contrastive_search

    got = invoke(
        "generate",
        "--model",
        tiny_model_dir,
        "--strategy",
        "contrastive-search",
        "--alpha",
        "0.5",
        "--top-k",
        "3",
        "--max-new-tokens",
        "6",
        PROMPT,
    )
    ref = continuation(*tiny, PROMPT, 6, custom_generate=contrastive_search, penalty_alpha=0.5, top_k=3)
    assert got == ref + "\n"


def test_contrastive_decoding(tiny_model_dir, tiny_amateur_dir, tiny):
    from counterpoint.decoding import ContrastConfig, contrastive_decoding

    got = invoke(
        "generate",
        "--model",
        tiny_model_dir,
        "--strategy",
        "contrastive-decoding",
        "--amateur",
        tiny_amateur_dir,
        "--beta",
        "0.8",
        "--max-new-tokens",
        "6",
        PROMPT,
    )
    amateur, _ = load_language_model(tiny_amateur_dir)
    ref = continuation(
        *tiny,
        PROMPT,
        6,
        custom_generate=contrastive_decoding,
        amateur_model=amateur,
        contrast=ContrastConfig(beta=0.8),
        do_sample=False,
        num_beams=1,
    )
    assert got == ref + "\n"


def test_layer_contrast(tiny_model_dir, tiny):
    from counterpoint.decoding import ContrastConfig, layer_contrast

    got = invoke(
        "generate",
        "--model",
        tiny_model_dir,
        "--strategy",
        "layer-contrast",
        "--layers",
        "0",
        "--max-new-tokens",
        "6",
        PROMPT,
    )
    ref = continuation(
        *tiny,
        PROMPT,
        6,
        custom_generate=layer_contrast,
        amateur_layers=0,
        layer_mode="fixed",
        contrast=ContrastConfig(),
        do_sample=False,
        num_beams=1,
    )
    assert got == ref + "\n"


def test_input_contrast_run_uses_the_no_demos_prompt(tiny_model_dir, tiny, tmp_path, monkeypatch):
    from counterpoint.decoding import ContrastConfig, input_contrast

    monkeypatch.setattr(
        cli, "_build_selector", lambda pool, kw, template, tok, method_kwargs, model=None: _FirstTwo()
    )
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps(QUERIES[0]) + "\n")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(p) + "\n" for p in POOL))
    out = invoke(
        "run",
        queries,
        "--pool",
        pool,
        "--model",
        tiny_model_dir,
        "--strategy",
        "input-contrast",
        "--variant",
        "no-demos",
        "--max-new-tokens",
        "5",
    )
    [row] = [json.loads(line) for line in out.splitlines()]
    template = FewShotTemplate()
    assert row["prompt"] == template.render_text(POOL[:2], QUERIES[0])
    assert row["amateur_prompt"] == template.render_text([], QUERIES[0])
    model, tok = tiny
    enc = tok([row["prompt"]], return_tensors="pt")
    am = tok([row["amateur_prompt"]], return_tensors="pt")
    ref = model.generate(
        **enc,
        max_new_tokens=5,
        custom_generate=input_contrast,
        amateur_input_ids=am["input_ids"],
        amateur_attention_mask=am["attention_mask"],
        contrast=ContrastConfig(),
        do_sample=False,
        num_beams=1,
    )
    assert row["output"] == tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


class _FirstTwo:
    def select(self, queries):
        return [[{"index": i, "score": 0.0, "example": POOL[i]} for i in range(2)] for _ in queries]


def test_select_command_matches_the_library(tmp_path):
    from counterpoint.selection import DemoPool, select

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(p) + "\n" for p in POOL))
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    out = invoke("select", pool, queries, "-k", "2", "--method", "bm25")
    rows = [json.loads(line) for line in out.splitlines()]
    ref = select(DemoPool.from_jsonl(pool, text_keys=("input",)), QUERIES, k=2, method="bm25")
    assert rows == [{"index": i, "demos": json.loads(json.dumps(r))} for i, r in enumerate(ref)]


def test_run_with_the_real_selector_and_a_token_budget(tiny_model_dir, tiny, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(p) + "\n" for p in POOL))
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    out = invoke(
        "run",
        queries,
        "--pool",
        pool,
        "-k",
        "3",
        "--method",
        "bm25",
        "--max-tokens",
        "40",
        "--model",
        tiny_model_dir,
        "--max-new-tokens",
        "2",
    )
    rows = [json.loads(line) for line in out.splitlines()]
    _, tok = tiny
    for row in rows:
        assert row["prompt"] == FewShotTemplate().render_text(row["demos"], row["query"])
        assert len(tok(row["prompt"])["input_ids"]) <= 40
    assert torch.tensor([len(r["demos"]) for r in rows]).le(3).all()
