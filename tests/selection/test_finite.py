"""NaN or inf in pool or query embeddings is refused before any search, naming the rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from counterpoint.selection import DemoPool, select

from .conftest import LookupEmbedder, make_pool, unit_rows


def test_precomputed_pool_embeddings():
    emb = unit_rows(5, 4, 0)
    emb[1, 2] = np.nan
    emb[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"embeddings= gave NaN or inf in 2 of 5 rows: record 1, record 3;"):
        DemoPool.from_records([{"input": f"t{i}"} for i in range(5)], embeddings=emb)


def test_embedder_output_names_the_file_lines(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps({"input": t}) for t in ["a", "b", "", "c"]) + "\n")
    path.write_text(path.read_text().replace('{"input": ""}\n', "\n"))  # a blank line 3

    def embed(texts):
        return [[np.nan, 1.0] if t == "c" else [1.0, 0.0] for t in texts]

    with pytest.raises(
        ValueError, match=r"the embedder \(function\) gave NaN or inf in 1 of 3 rows: .*pool.jsonl: line 4;"
    ):
        DemoPool.from_jsonl(path, embedder=embed)


def test_many_bad_rows_are_counted():
    emb = np.full((30, 3), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match=r"in 30 of 30 rows: record 0, .*, record 9 and 20 more;"):
        DemoPool.from_records([{"input": f"t{i}"} for i in range(30)], embeddings=emb)


def test_added_examples():
    pool, _, _, _ = make_pool(n=10)
    with pytest.raises(ValueError, match=r"embeddings= gave NaN or inf in 1 of 2 rows: new record 1;"):
        pool.add([{"input": "x"}, {"input": "y"}], embeddings=[[1.0] * 16, [np.inf] * 16])
    assert len(pool) == 10  # nothing was added


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp"])
def test_query_embeddings_from_the_embedder_and_given(method, monkeypatch):
    pool, qtexts, _, q_mat = make_pool(n=20)
    searched = []
    monkeypatch.setattr(pool, "search", lambda *a, **kw: searched.append(1))
    bad = q_mat[:3].copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"query_embeddings gave NaN or inf in 1 of 3 rows: query 2;"):
        select(pool, qtexts[:3], k=2, method=method, query_embeddings=bad)
    table = dict(pool.embedder.model.table)
    table[qtexts[1]] = np.full(16, -np.inf, dtype=np.float32)
    pool.embedder = type(pool.embedder)(LookupEmbedder(table))
    with pytest.raises(
        ValueError, match=r"the embedder \(LookupEmbedder\) gave NaN or inf in 1 of 3 rows: query 1;"
    ):
        select(pool, qtexts[:3], k=2, method=method)
    assert searched == []  # refused before any search


def test_saved_embeddings_file(tmp_path):
    pool, _, _, _ = make_pool(n=6)
    pool.save(tmp_path / "p")
    emb = np.load(tmp_path / "p" / "embeddings.npy")
    emb[4, 1] = np.nan
    np.save(tmp_path / "p" / "embeddings.npy", emb)
    with pytest.raises(ValueError, match=r"p/embeddings.npy gave NaN or inf in 1 of 6 rows: row 4;"):
        DemoPool.load(tmp_path / "p", embedder=pool.embedder)
