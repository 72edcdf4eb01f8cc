"""Exact search against a brute-force top-k, and the faiss indexes against exact search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from counterpoint.selection import exact_search
from counterpoint.selection.search import FaissIndexConfig, build_faiss_index, faiss_search

from .conftest import make_pool, unit_rows


def brute_force(q: np.ndarray, c: np.ndarray, k: int, exclude=None):
    scores = torch.from_numpy(q) @ torch.from_numpy(c).T  # (Q, N), one full matrix product
    if exclude is not None:
        for row, cols in enumerate(exclude):
            scores[row, cols] = float("-inf")
    return scores.topk(k, dim=1)


@pytest.mark.parametrize("query_chunk_size", [5, 17, 1000])
@pytest.mark.parametrize("corpus_chunk_size", [5, 17, 1000])
@pytest.mark.parametrize("k", [1, 7, 23])
def test_exact_search_matches_brute_force_topk(query_chunk_size, corpus_chunk_size, k):
    q, c = unit_rows(23, 12, seed=1), unit_rows(101, 12, seed=2)
    want_s, want_i = brute_force(q, c, k)
    got_s, got_i = exact_search(
        torch.from_numpy(q),
        torch.from_numpy(c),
        k,
        query_chunk_size=query_chunk_size,
        corpus_chunk_size=corpus_chunk_size,
    )
    assert got_i.tolist() == want_i.tolist()
    torch.testing.assert_close(got_s, want_s)


@pytest.mark.parametrize("chunk", [5, 17])
def test_exact_search_exclusion_matches_masked_brute_force(chunk):
    q, c = unit_rows(19, 8, seed=3), unit_rows(53, 8, seed=4)
    rng = np.random.default_rng(0)
    # Exclude each query's own best hits and some random entries, across chunk boundaries.
    best = brute_force(q, c, 3)[1].tolist()
    exclude = [sorted(set(b[: rng.integers(0, 4)]) | set(rng.integers(0, 53, 2).tolist())) for b in best]
    want_s, want_i = brute_force(q, c, 5, exclude)
    got_s, got_i = exact_search(
        torch.from_numpy(q),
        torch.from_numpy(c),
        5,
        exclude=exclude,
        query_chunk_size=chunk,
        corpus_chunk_size=chunk,
    )
    assert got_i.tolist() == want_i.tolist()
    torch.testing.assert_close(got_s, want_s)
    for row, cols in zip(got_i.tolist(), exclude, strict=True):
        assert not set(row) & set(cols)


def test_exact_search_bad_shapes():
    with pytest.raises(ValueError, match=r"must be \(Q, D\) and \(N, D\) with the same D"):
        exact_search(torch.zeros(2, 3), torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match="k must be between 1 and the corpus size 4, got 5"):
        exact_search(torch.zeros(2, 3), torch.zeros(4, 3), 5)
    with pytest.raises(ValueError, match="corpus_chunk_size must be a positive int, got 0"):
        exact_search(torch.zeros(2, 3), torch.zeros(4, 3), 1, corpus_chunk_size=0)


def test_faiss_flat_equals_exact_search():
    q, c = unit_rows(31, 16, seed=5), unit_rows(257, 16, seed=6)
    exclude = [[j % 257, (7 * j) % 257] for j in range(31)]
    index = build_faiss_index(c, FaissIndexConfig(kind="flat"))
    f_s, f_i = faiss_search(index, q, 9, exclude=exclude)
    e_s, e_i = exact_search(
        torch.from_numpy(q), torch.from_numpy(c), 9, exclude=exclude, corpus_chunk_size=17
    )
    assert f_i.tolist() == e_i.tolist()
    torch.testing.assert_close(f_s, e_s)


def test_faiss_ivf_probing_every_cell_equals_exact_search():
    # IVF that visits all its cells is exhaustive, hence exact.
    q, c = unit_rows(20, 16, seed=7), unit_rows(400, 16, seed=8)
    index = build_faiss_index(c, FaissIndexConfig(kind="ivf", nlist=8, nprobe=8))
    f_s, f_i = faiss_search(index, q, 5)
    e_s, e_i = exact_search(torch.from_numpy(q), torch.from_numpy(c), 5)
    assert f_i.tolist() == e_i.tolist()
    torch.testing.assert_close(f_s, e_s)


def test_pool_search_uses_its_index_and_hnsw_recall_is_high():
    pool, qtexts, _, q_mat = make_pool(n=300, d=16, n_queries=20)
    exact = pool.search(torch.from_numpy(q_mat), 8)[1]
    pool.build_index("flat")
    assert pool.search(torch.from_numpy(q_mat), 8)[1].tolist() == exact.tolist()
    pool.build_index("hnsw", ef_search=128)
    approx = pool.search(torch.from_numpy(q_mat), 8)[1]
    recall = np.mean([len(set(a) & set(e)) / 8 for a, e in zip(approx.tolist(), exact.tolist(), strict=True)])
    assert recall >= 0.9


def test_faiss_index_config_validation():
    with pytest.raises(ValueError, match=r"index kind must be one of \['flat', 'hnsw', 'ivf'\], got 'lsh'"):
        FaissIndexConfig(kind="lsh")
    with pytest.raises(ValueError, match="nprobe must be a positive int, got 0"):
        FaissIndexConfig(kind="ivf", nprobe=0)
