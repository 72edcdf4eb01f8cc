"""DemoPool: building, persistence, growth, and every bad input with its message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from counterpoint.selection import DemoPool, select

from .conftest import LookupEmbedder, make_pool, unit_rows


def write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", [None, "flat", "hnsw", "ivf"])
@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "bm25", "vote-k"])
def test_saved_pool_loads_to_identical_results(tmp_path, kind, method):
    pool, qtexts, _, _ = make_pool(n=120, labels=3)
    if kind is not None:
        pool.build_index(kind, **({"nlist": 4, "nprobe": 2} if kind == "ivf" else {}))
    kwargs = {"graph_k": 10} if method == "vote-k" else {"balance_labels": method == "knn"}
    before = select(pool, qtexts, k=5, method=method, **kwargs)
    pool.save(tmp_path / "pool")
    loaded = DemoPool.load(tmp_path / "pool", embedder=pool.embedder)
    assert loaded.records == pool.records and loaded.texts == pool.texts
    assert torch.equal(loaded.embeddings, pool.embeddings)
    assert (loaded.text_keys, loaded.label_key, loaded.id_key) == (pool.text_keys, "label", "id")
    assert (loaded.index_config is None) == (kind is None)
    assert select(loaded, qtexts, k=5, method=method, **kwargs) == before


def test_add_examples_then_select_equals_pool_built_at_once():
    full, qtexts, _, _ = make_pool(n=50)
    part = DemoPool.from_records(full.records[:30], embedder=full.embedder)
    part.build_index("flat")
    assert part.add(full.records[30:]) == list(range(30, 50))
    assert torch.equal(part.embeddings, full.embeddings)
    assert part.index.ntotal == 50
    for got, want in zip(select(part, qtexts, k=6), select(full, qtexts, k=6), strict=True):
        assert [d["index"] for d in got] == [d["index"] for d in want]
        assert [d["score"] for d in got] == pytest.approx([d["score"] for d in want], abs=1e-6)
    assert select(part, qtexts, k=6, method="bm25") == select(full, qtexts, k=6, method="bm25")


def test_from_jsonl_reads_rows_and_skips_blank_lines(tmp_path):
    rows = [{"input": f"t{i}", "label": i % 2} for i in range(4)]
    path = write_jsonl(
        tmp_path / "p.jsonl", [json.dumps(r) for r in rows[:2]] + [""] + [json.dumps(r) for r in rows[2:]]
    )
    table = {f"t{i}": v for i, v in enumerate(unit_rows(4, 5, 0))}
    pool = DemoPool.from_jsonl(path, label_key="label", embedder=LookupEmbedder(table))
    assert pool.records == rows and pool.labels == [0, 1, 0, 1]
    np.testing.assert_allclose(pool.embeddings.numpy(), np.stack(list(table.values())), rtol=1e-6)


def test_embedder_output_is_normalised_and_text_keys_are_joined():
    seen = []

    def embed(texts):
        seen.extend(texts)
        return [[3.0, 4.0]] * len(texts)

    pool = DemoPool.from_records([{"q": "a", "c": "b", "ans": "x"}], text_keys=("q", "c"), embedder=embed)
    assert seen == ["a\nb"]
    torch.testing.assert_close(pool.embeddings, torch.tensor([[0.6, 0.8]]))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("lines", "kwargs", "message"),
    [
        (
            ['{"input": "a"}', '{"input": "b"', '{"input": "c"}'],
            {},
            r"pool file '.*p.jsonl', line 2: not valid JSON",
        ),
        (
            ['{"input": "a"}', "", '{"text": "b"}'],
            {},
            r"p.jsonl: line 3: missing text key 'input' \(text_keys=\['input'\]\); the example has keys \['text'\]",
        ),
        (
            ['{"input": "a", "y": 1}', '{"input": "b"}'],
            {"label_key": "y"},
            r"p.jsonl: line 2: missing label key 'y'",
        ),
        (['{"input": 5}'], {}, r"p.jsonl: line 1: text key 'input' must hold a string, got int"),
        (['["input", "a"]'], {}, r"pool file '.*p.jsonl', line 1: expected a JSON object, got list"),
        (["", "  "], {}, r"the pool is empty: .*p.jsonl holds no examples"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, lines, kwargs, message):
    path = write_jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        DemoPool.from_jsonl(path, embedder=lambda t: [[1.0]] * len(t), **kwargs)


def test_bad_records_and_embeddings():
    embed = lambda t: [[1.0, 0.0]] * len(t)  # noqa: E731
    with pytest.raises(ValueError, match="the pool is empty: records is empty"):
        DemoPool.from_records([], embedder=embed)
    with pytest.raises(ValueError, match=r"record 1: missing text key 'input'"):
        DemoPool.from_records([{"input": "a"}, {"x": "b"}], embedder=embed)
    with pytest.raises(
        ValueError, match=r"text_keys must be a non-empty string or sequence of strings, got \(\)"
    ):
        DemoPool.from_records([{"input": "a"}], text_keys=(), embedder=embed)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(2, D\) for 2 records, got \(3, 2\)"):
        DemoPool.from_records([{"input": "a"}, {"input": "b"}], embeddings=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"the embedder returned shape \(1, 2\) for 2 texts"):
        DemoPool.from_records(
            [{"input": "a"}, {"input": "b"}], embedder=lambda t: [[1.0, 0.0]], show_progress_bar=False
        )
    with pytest.raises(
        TypeError, match="embedder must be None, a model name, a SentenceTransformer or a callable"
    ):
        DemoPool.from_records([{"input": "a"}], embedder=42)


def test_bad_select_arguments():
    pool, qtexts, _, _ = make_pool(n=10)
    cases = [
        ({"k": 11}, r"k=11 is larger than the pool \(10 examples\); lower k or add examples"),
        ({"k": 0}, "k must be a positive int, got 0"),
        (
            {"method": "knn2"},
            r"method must be one of \['knn', 'mmr', 'dpp', 'bm25', 'random', 'vote-k', 'lm', 'se2'\], got 'knn2'",
        ),
        (
            {"order": "up"},
            r"order must be one of \['most_similar_last', 'most_similar_first', 'random'\], got 'up'",
        ),
        ({"max_tokens": 50}, "max_tokens needs tokenizer="),
        ({"method": "mmr", "fetch_k": 2}, "fetch_k=2 must be at least k=4"),
        ({"method": "mmr", "lambda_mult": 1.5}, r"lambda_mult=1.5 must be in \[0, 1\]"),
        ({"method": "dpp", "top_n": 3}, r"method='dpp' takes no argument\(s\) \['top_n'\]; valid: "),
        ({"balance_labels": True}, "balance_labels=True needs a pool built with label_key="),
        (
            {"query_key": "question"},
            r"query 0 has no key 'question' \(query_key='question'\); it has keys \['input'\]",
        ),
    ]
    queries = [{"input": t} for t in qtexts]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            select(pool, queries, **{"k": 4, **kwargs})
    with pytest.raises(ValueError, match="queries is empty: pass at least one query"):
        select(pool, [])
    with pytest.raises(ValueError, match="queries must be a list of dicts or strings, got str"):
        select(pool, "q0")
    # The query is in the pool: excluding it leaves 9.
    with pytest.raises(ValueError, match=r"k=10 is larger than what query 0 can get: 9 examples are left"):
        select(pool, ["p3"], k=10)


def test_query_embedding_dimension_mismatch():
    pool, qtexts, _, _ = make_pool(n=10, d=16)
    with pytest.raises(
        ValueError, match=r"query embeddings have shape \(2, 8\) but the pool's embeddings have dimension 16"
    ):
        select(pool, qtexts[:2], query_embeddings=unit_rows(2, 8, 0))
    pool.embedder = type(pool.embedder)(lambda t: unit_rows(len(t), 12, 0))
    with pytest.raises(
        ValueError, match=r"query embeddings have shape \(2, 12\) but the pool's embeddings have dimension 16"
    ):
        select(pool, qtexts[:2])


def test_load_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="holds no pool.json; is it a folder written by DemoPool.save"
    ):
        DemoPool.load(tmp_path)
