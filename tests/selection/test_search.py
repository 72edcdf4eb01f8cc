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


def brute_force_tie_rule(q: np.ndarray, c: np.ndarray, k: int, exclude=None):
    """Full score matrix, each row sorted by score (decreasing), then index (increasing).

    Each pair is summed on its own in float64, so equal vectors score exactly equal (a matrix
    product may round them apart by where they sit).
    """
    s = (q.astype(np.float64)[:, None, :] * c.astype(np.float64)[None, :, :]).sum(axis=-1)  # (Q, N)
    if exclude is not None:
        for row, cols in enumerate(exclude):
            s[row, cols] = -np.inf
    idx = [np.lexsort((np.arange(s.shape[1]), -row))[:k] for row in s]
    return np.take_along_axis(s, np.array(idx), 1), np.array(idx)


@pytest.mark.parametrize("query_chunk_size", [5, 17])
@pytest.mark.parametrize("corpus_chunk_size", [5, 17, 1000])
@pytest.mark.parametrize("k", [1, 6, 13])
def test_exact_search_breaks_ties_by_lowest_index(query_chunk_size, corpus_chunk_size, k):
    # Six distinct vectors, each repeated many times: nearly every score is tied, across chunks too.
    base = unit_rows(6, 8, seed=12)
    rng = np.random.default_rng(3)
    c = base[rng.integers(0, 6, size=97)]
    q = base[rng.integers(0, 6, size=23)] + 0.01 * unit_rows(23, 8, seed=13)
    exclude = [rng.choice(97, size=rng.integers(0, 5), replace=False).tolist() for _ in range(23)]
    want_s, want_i = brute_force_tie_rule(q, c, k, exclude)
    got_s, got_i = exact_search(
        torch.from_numpy(q),
        torch.from_numpy(c),
        k,
        exclude=exclude,
        query_chunk_size=query_chunk_size,
        corpus_chunk_size=corpus_chunk_size,
    )
    assert got_i.tolist() == want_i.tolist()
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-6)


@pytest.mark.parametrize("corpus_chunk_size", [7, 17, 1000])
def test_exact_search_more_ties_than_its_margin_takes_the_lowest_indices(corpus_chunk_size):
    # 60 copies of the best vector (more than the candidates kept past k), scattered over chunks.
    c = unit_rows(200, 16, seed=14)
    rng = np.random.default_rng(5)
    copies = np.sort(rng.choice(np.arange(10, 200), size=60, replace=False))
    c[copies] = c[3]
    q = (c[3] + 0.2 * unit_rows(1, 16, seed=15)).astype(np.float32)
    q /= np.linalg.norm(q)
    exclude = [[int(copies[1])]]
    for k in (1, 5, 40):
        got_s, got_i = exact_search(
            torch.from_numpy(q), torch.from_numpy(c), k, exclude=exclude, corpus_chunk_size=corpus_chunk_size
        )
        want_s, want_i = brute_force_tie_rule(q, c, k, exclude)
        assert got_i.tolist() == want_i.tolist()
        assert got_i[0].tolist() == [3, *[int(i) for i in copies if i != copies[1]]][:k]
        np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-6)
