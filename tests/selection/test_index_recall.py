"""Approximate faiss indexes: search parameters tuned to a recall target, measured, saved, reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import counterpoint.selection.search as search
from counterpoint.selection import DemoPool, FaissIndexConfig

from .conftest import unit_rows

HNSW = {"hnsw_m": 6, "ef_construction": 12}  # a small graph: it needs more than the first efSearch tried


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, like sentence embeddings of a few topics."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(clusters, d, 1)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(
        np.float32
    ) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_pool(n: int = 3000, d: int = 64, clusters: int = 100, seed: int = 0) -> DemoPool:
    return DemoPool.from_records(
        [{"input": f"t{i}"} for i in range(n)], embeddings=clustered(n, d, clusters, seed)
    )


def recall_on_new_queries(pool: DemoPool, queries: np.ndarray, k: int) -> float:
    """Recall@k of the pool's index for queries it has never seen, against a full matrix product."""
    sims = queries.astype(np.float64) @ pool.embeddings.numpy().astype(np.float64).T
    want = np.argsort(-sims, axis=1)[:, :k]
    got = pool.search(torch.from_numpy(queries), k)[1].numpy()
    return float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want, strict=True)]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_default_index_reaches_095_recall_on_its_own_rows(kind):
    # Pools where neither index reaches the target at its cheapest setting.
    d, clusters = (64, 100) if kind == "hnsw" else (32, 30)
    pool = clustered_pool(d=d, clusters=clusters)
    pool.build_index(kind, **(HNSW if kind == "hnsw" else {}))
    report = pool.index_recall
    assert report.target == 0.95 and report.reached and report.recall >= 0.95 and report.k == 10
    assert report.parameter == {"hnsw": "ef_search", "ivf": "nprobe"}[kind]
    # The smallest value tried that reaches the target: every smaller one fell short.
    assert report.tried[-1] == (report.value, report.recall)
    assert len(report.tried) >= 2 and all(r < 0.95 for _, r in report.tried[:-1])
    # Independently, for 400 new queries from the same topics: the held-out measurement holds.
    assert recall_on_new_queries(pool, clustered(400, d, clusters, seed=7), 10) >= 0.93
    if kind == "hnsw":
        assert pool.index.hnsw.efSearch == report.value
    else:
        assert pool.index.nprobe == report.value
        assert report.value < pool.index.nlist  # cheaper than an exhaustive scan


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_lower_target_trades_recall_for_speed(kind):
    pool = clustered_pool()
    params = HNSW if kind == "hnsw" else {}
    high = pool.build_index(kind, **params).index_recall
    low = pool.build_index(kind, target_recall=0.6, **params).index_recall
    assert low.target == 0.6 and low.recall >= 0.6 and low.value <= high.value
    assert all(r < 0.6 for _, r in low.tried[:-1])


def test_fixed_parameter_is_honoured_and_still_measured():
    pool = clustered_pool()
    pool.build_index("hnsw", ef_search=12, **HNSW)
    report = pool.index_recall
    assert pool.index.hnsw.efSearch == 12 and report.value == 12 and report.target is None
    assert report.tried == ((12, report.recall),) and 0 < report.recall < 1
    pool.build_index("ivf", nprobe=2)
    assert pool.index.nprobe == 2 and pool.index_recall.value == 2 and pool.index_recall.reached


def test_unreachable_target_warns_and_keeps_the_best(monkeypatch):
    monkeypatch.setattr(search, "_ladder", lambda kind, index, n, k: [11, 12])
    pool = clustered_pool(n=2000, d=64, clusters=400)
    with pytest.warns(
        UserWarning,
        match=r"faiss hnsw index: recall@10 reaches only 0\.\d+ \(best of ef_search up to 12\) against "
        r"target_recall=0\.999; raise hnsw_m or ef_construction",
    ):
        pool.build_index("hnsw", target_recall=0.999, hnsw_m=4, ef_construction=8)
    report = pool.index_recall
    assert not report.reached and report.value in (11, 12)
    assert report.recall == max(r for _, r in report.tried)


def test_save_and_load_keep_the_chosen_parameter(tmp_path):
    pool = clustered_pool(n=1500)
    queries = torch.from_numpy(unit_rows(7, 64, 9))
    for kind in ("hnsw", "ivf"):
        pool.build_index(kind, target_recall=0.9)
        before = pool.search(queries, 5)
        pool.save(tmp_path / kind)
        meta = json.loads((tmp_path / kind / "pool.json").read_text())
        assert meta["format_version"] == 2 and meta["index_recall"]["value"] == pool.index_recall.value
        loaded = DemoPool.load(tmp_path / kind, embedder=pool.embedder)
        assert np.array_equal(loaded._index_ids, pool._index_ids)  # faiss id -> row, held-out rows last
        assert loaded.index_recall == pool.index_recall and loaded.index_config == pool.index_config
        knob = loaded.index.hnsw.efSearch if kind == "hnsw" else loaded.index.nprobe
        assert knob == pool.index_recall.value
        after = loaded.search(queries, 5)
        assert torch.equal(after[1], before[1])


def test_format_1_pool_loads_with_its_fixed_parameter(tmp_path):
    pool = clustered_pool(n=500)
    pool.build_index("hnsw", ef_search=40)
    pool.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "pool.json").read_text())
    meta["format_version"] = 1
    del meta["index_recall"]
    for key in ("target_recall", "recall_k", "recall_sample", "seed"):
        del meta["index"][key]
    meta["index"]["nprobe"] = 16  # what version 1 wrote for every kind
    (tmp_path / "p" / "pool.json").write_text(json.dumps(meta))
    loaded = DemoPool.load(tmp_path / "p")
    assert loaded.index.hnsw.efSearch == 40 and loaded.index_recall is None


def test_deeper_search_than_measured_warns_once():
    pool = clustered_pool(n=800)
    pool.build_index("ivf")
    queries = torch.from_numpy(unit_rows(3, 64, 4))
    with pytest.warns(
        UserWarning, match=r"asks the faiss ivf index for 20 neighbours, but its recall was measured at k=10"
    ):
        pool.search(queries, 20)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pool.search(queries, 20)  # said once
        pool.search(queries, 10)  # within what was measured


def test_config_validation():
    with pytest.raises(
        ValueError,
        match=r"pass either target_recall=0.9 \(the hnsw index picks ef_search to reach it\) or ef_search=64 \(fixed\), not both",
    ):
        FaissIndexConfig(kind="hnsw", target_recall=0.9, ef_search=64)
    with pytest.raises(ValueError, match=r"target_recall must be in \(0, 1\] or None, got 1.5"):
        FaissIndexConfig(kind="ivf", target_recall=1.5)
    with pytest.raises(ValueError, match="recall_k must be a positive int, got 0"):
        FaissIndexConfig(kind="ivf", recall_k=0)
    FaissIndexConfig(kind="ivf", target_recall=0.9, ef_search=64)  # ef_search is hnsw's: no conflict
