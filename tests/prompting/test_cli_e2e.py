"""End to end on the embedded models: ``counterpoint run`` with SmolLM2 and a MiniLM nearest-neighbour selector."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from counterpoint import cli
from counterpoint.prompting import FewShotTemplate, Pipeline

POOL = [
    {"input": "An absolute delight from start to finish.", "output": "positive"},
    {"input": "I walked out halfway through, it was that boring.", "output": "negative"},
    {"input": "The acting was superb and the story moving.", "output": "positive"},
    {"input": "A waste of two hours and a ticket.", "output": "negative"},
    {"input": "Funny, warm and beautifully shot.", "output": "positive"},
    {"input": "Clumsy dialogue and a plot full of holes.", "output": "negative"},
]
QUERIES = [
    {"id": "q1", "input": "A wonderful, moving film with superb acting."},
    {"id": "q2", "input": "Boring and clumsy; I wanted to walk out."},
]


class EmbeddingKnn:
    """k nearest pool examples by MiniLM cosine similarity, most similar last (what selection's knn does)."""

    def __init__(self, embedder, pool, k):
        self.embedder, self.pool, self.k = embedder, pool, k
        self.pool_vectors = embedder.encode([p["input"] for p in pool], normalize_embeddings=True)

    def select(self, queries):
        q = self.embedder.encode([x["input"] for x in queries], normalize_embeddings=True)
        scores = q @ self.pool_vectors.T
        out = []
        for row in scores:
            best = np.argsort(-row, kind="stable")[: self.k][::-1]
            out.append([{"index": int(i), "score": float(row[i]), "example": self.pool[i]} for i in best])
        return out


@pytest.mark.slow
def test_counterpoint_run_on_the_embedded_models(smollm2, minilm, tmp_path, monkeypatch):
    selector = EmbeddingKnn(minilm, POOL, k=3)
    monkeypatch.setattr(
        cli, "_build_selector", lambda pool, kw, template, tok, method_kwargs, model=None: selector
    )
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(p) + "\n" for p in POOL))
    out = tmp_path / "out.jsonl"
    instruction = "Answer with one word: positive or negative."
    args = ["run", str(queries), "--pool", str(pool), "-k", "3", "--chat", "--instruction", instruction]
    args += ["--max-new-tokens", "4", "-o", str(out)]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    rows = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["index"])

    model, tokenizer = smollm2
    template = FewShotTemplate(instruction=instruction).chat(tokenizer)
    ref = Pipeline(model, tokenizer, template, selector, max_new_tokens=4).run(QUERIES)
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert [{k: v for k, v in r.items() if k != "id"} for r in rows] == [r.to_dict() for r in ref]
    # The demonstrations are the nearest by meaning, and the instruct model follows the format.
    assert {d["example"]["output"] for d in rows[0]["demos"]} == {"positive"}
    assert [r["output"].strip().lower() for r in rows] == ["positive", "negative"]
