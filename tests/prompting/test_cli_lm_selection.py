"""The LM-scored selection methods from the command line: ``select`` loads the target model, ``run`` uses the
one it generates with, and both give what the library gives."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import counterpoint.models
from counterpoint import cli
from counterpoint.models import load_language_model
from counterpoint.prompting import FewShotTemplate
from counterpoint.selection import DemoPool, LMScorer, select
from tests.prompting.test_pipeline import POOL, QUERIES

VOCAB = sorted({w for r in POOL + QUERIES for w in r["input"].split()})


def bag_of_words(texts):
    """A deterministic stand-in for the sentence embedder (the test needs no MiniLM)."""
    out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.split():
            if w in VOCAB:
                out[i, VOCAB.index(w)] += 1.0
        out[i, i % len(VOCAB)] += 0.01  # no all-zero rows
    return out


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(counterpoint.models, "load_embedder", lambda *a, **k: bag_of_words)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(p) + "\n" for p in POOL))
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    return pool, queries


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("method", ["lm", "se2"])
def test_select_command_matches_the_library(files, tiny_model_dir, method):
    pool, queries = files
    out = invoke(
        "select", pool, queries, "-k", "2", "--method", method, "--label-key", "output", "--model", tiny_model_dir,
        "--candidates", "3",
    )  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    model, tok = load_language_model(tiny_model_dir)
    scorer = LMScorer.from_template(model, tok, FewShotTemplate())
    demo_pool = DemoPool.from_jsonl(pool, text_keys=("input",), label_key="output", embedder=bag_of_words)
    ref = select(demo_pool, QUERIES, k=2, method=method, candidates=3, scorer=scorer)
    assert rows == [{"index": i, "demos": json.loads(json.dumps(r))} for i, r in enumerate(ref)]


def test_run_selects_with_the_model_it_generates_with(files, tiny_model_dir):
    pool, queries = files
    out = invoke(
        "run", queries, "--pool", pool, "-k", "2", "--method", "se2", "--label-key", "output", "--candidates", "3",
        "--beam-size", "2", "--model", tiny_model_dir, "--max-new-tokens", "1",
    )  # fmt: skip
    rows = sorted(
        (json.loads(line) for line in out.splitlines()), key=lambda row: row["index"]
    )  # batch order
    model, tok = load_language_model(tiny_model_dir)
    scorer = LMScorer.from_template(model, tok, FewShotTemplate())
    demo_pool = DemoPool.from_jsonl(pool, text_keys=("input",), label_key="output", embedder=bag_of_words)
    ref = select(demo_pool, QUERIES, k=2, method="se2", candidates=3, beam_size=2, scorer=scorer)
    for row, want in zip(rows, ref, strict=True):
        assert [d["index"] for d in row["demos"]] == [d["index"] for d in want]
        assert row["prompt"] == FewShotTemplate().render_text(row["demos"], row["query"])
