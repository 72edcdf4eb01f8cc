"""Label quotas and the one tie rule, against a brute-force walk of each query's full ranking.

The reference ranks the whole pool per query by score (decreasing), then pool index (increasing),
and walks it: skip excluded entries and labels at quota, stop at k. The pools are built so that
nearly every score is tied (a few distinct vectors or words, repeated), where any other tie rule
or a missing candidate shows.
"""

from __future__ import annotations

import collections
import itertools
import math
import tracemalloc

import numpy as np
import pytest
import torch

import counterpoint.selection.selectors as selectors
from counterpoint.selection import DemoPool, select

from .conftest import LookupEmbedder, unit_rows
from .test_selectors import naive_vote_k

LABELS = ["a", "b", "b", "c", "a", "b", "b"]  # uneven: b is twice as common


def tied_pool(n: int = 70, d: int = 8, n_queries: int = 12, seed: int = 0):
    """A pool of ``n`` examples over 5 distinct unit vectors and a small vocabulary (ties everywhere).

    Queries: new texts near the distinct vectors, and copies of pool texts (excluded from their own
    results). Returns ``(pool, queries, pool_matrix, query_matrix)``.
    """
    rng = np.random.default_rng(seed)
    base = unit_rows(5, d, seed=seed + 100)
    pool_mat = base[rng.integers(0, 5, size=n)]
    words = ["red", "green", "blue", "cat", "dog", "sun"]
    texts = [" ".join(rng.choice(words, size=3)) + f" x{i}" for i in range(n)]
    new = [f"query {j} " + " ".join(rng.choice(words, size=2)) for j in range(n_queries - 3)]
    q_new = base[rng.integers(0, 5, size=len(new))] + 0.05 * unit_rows(len(new), d, seed=seed + 7)
    q_new /= np.linalg.norm(q_new, axis=1, keepdims=True)
    copies = [texts[i] for i in (0, 5, 33)]
    qtexts = new + copies
    q_mat = np.concatenate([q_new, pool_mat[[0, 5, 33]]]).astype(np.float32)
    table = dict(zip(texts + new, list(pool_mat) + list(q_new), strict=True))
    records = [{"input": t, "label": LABELS[i % len(LABELS)], "id": i} for i, t in enumerate(texts)]
    pool = DemoPool.from_records(records, label_key="label", embedder=LookupEmbedder(table))
    return pool, qtexts, pool_mat, q_mat


def walk(scores: np.ndarray, k: int, banned: set[int], labels=None, cap=None) -> list[int]:
    """The reference: the full ranking by (score desc, index asc), walked with exclusions and quotas."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    counts: collections.Counter = collections.Counter()
    out = []
    for i in order.tolist():
        if len(out) == k:
            break
        if i in banned or (labels is not None and counts[labels[i]] >= cap):
            continue
        counts[labels[i] if labels is not None else None] += 1
        out.append(i)
    return out


def pair_scores(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(Q, N)`` float64 dot products, each pair summed on its own: equal vectors tie exactly."""
    return (q.astype(np.float64)[:, None, :] * c.astype(np.float64)[None, :, :]).sum(axis=-1)


def banned_of(pool: DemoPool, text: str) -> set[int]:
    return set(pool.indices_with_text(text))


def bm25_scores(pool: DemoPool, texts: list[str]) -> np.ndarray:
    """bm25s' score of every pool entry for each query, from its own retrieve over the whole pool."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(pool.texts, stopwords="en", show_progress=False), show_progress=False)
    out = np.zeros((len(texts), len(pool)), dtype=np.float32)
    for qi, text in enumerate(texts):
        tokens = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=len(pool), show_progress=False)
        out[qi, docs[0]] = scores[0]
    return out


@pytest.mark.parametrize("method", ["knn", "bm25"])
@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("k", [1, 5, 7])
def test_scored_methods_equal_brute_force_walk(method, balance, k):
    pool, qtexts, pool_mat, q_mat = tied_pool()
    scores = pair_scores(q_mat, pool_mat) if method == "knn" else bm25_scores(pool, qtexts)
    cap = math.ceil(k / 3) if balance else None
    got = select(pool, qtexts, k=k, method=method, balance_labels=balance, order="most_similar_first")
    for row, text, s in zip(got, qtexts, scores, strict=True):
        want = walk(s, k, banned_of(pool, text), pool.labels if balance else None, cap)
        assert [d["index"] for d in row] == want


@pytest.mark.parametrize(("query_chunk_size", "corpus_chunk_size"), [(5, 17), (17, 5), (3, 1000)])
def test_per_label_search_equals_brute_force_with_odd_chunks(query_chunk_size, corpus_chunk_size):
    pool, qtexts, pool_mat, q_mat = tied_pool(n=90)
    scores = pair_scores(q_mat, pool_mat)
    exclude = [sorted(banned_of(pool, t)) for t in qtexts]
    for label in ("a", "b", "c"):
        members = [i for i, lab in enumerate(pool.labels) if lab == label]
        s, idx = pool.search(
            torch.from_numpy(q_mat),
            4,
            exclude=exclude,
            subset=members,
            query_chunk_size=query_chunk_size,
            corpus_chunk_size=corpus_chunk_size,
        )
        for qi in range(len(qtexts)):
            masked = np.full(len(pool), -np.inf)
            masked[members] = scores[qi, members]
            assert idx[qi].tolist() == walk(masked, 4, set(exclude[qi]))


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "bm25", "vote-k"])
def test_quotas_that_do_not_bind_change_nothing(method):
    # One label: the quota is k itself, so the balanced path must give the unbalanced result,
    # ties included (random draws differently with quotas; its own test checks the distribution).
    pool, qtexts, _, _ = tied_pool()
    for r in pool.records:
        r["label"] = "same"
    extra = {"graph_k": 6} if method == "vote-k" else {"fetch_k": 9} if method == "mmr" else {}
    plain = select(pool, qtexts, k=6, method=method, **extra)
    balanced = select(pool, qtexts, k=6, method=method, balance_labels=True, **extra)
    assert balanced == plain


def test_vote_k_with_quotas_equals_reference_walk():
    pool, qtexts, pool_mat, _ = tied_pool(n=50, d=6)
    pool_mat = pool.embeddings.numpy()
    order = naive_vote_k(pool_mat, 5, len(pool))
    got = select(
        pool, qtexts, k=5, method="vote-k", graph_k=5, balance_labels=True, order="most_similar_first"
    )
    position = {u: r for r, u in enumerate(order)}
    for row, text in zip(got, qtexts, strict=True):
        scores = np.array([-position[i] for i in range(len(pool))], dtype=np.float64)
        assert [d["index"] for d in row] == walk(scores, 5, banned_of(pool, text), pool.labels, 2)


def test_balanced_random_has_the_distribution_of_a_walked_random_permutation():
    # Exactly: every permutation of the pool, walked with the exclusion and quotas, each equally likely.
    labels = ["a", "a", "a", "a", "b", "b"]
    records = [{"input": f"t{i}", "label": lab} for i, lab in enumerate(labels)]
    pool = DemoPool.from_records(records, label_key="label", embeddings=np.eye(6))
    k, cap = 3, 2
    exact: collections.Counter = collections.Counter()
    perms = list(itertools.permutations(range(6)))
    for perm in perms:
        scores = np.empty(6)
        scores[list(perm)] = -np.arange(6)  # rank r gets score -r
        exact[tuple(walk(scores, k, {0}, labels, cap))] += 1 / len(perms)
    draws = 20_000
    got = select(pool, ["t0"] * draws, k=k, method="random", balance_labels=True, order="most_similar_first")
    seen = collections.Counter(tuple(d["index"] for d in row) for row in got)
    assert set(seen) <= set(exact)
    worst = max(abs(seen[o] / draws - p) for o, p in exact.items())
    assert worst < 0.012, worst  # 20,000 draws: a frequency's standard error is <= 0.0035
    # Seeded: the same draws again, other draws with another seed.
    again = select(pool, ["t0"] * 50, k=k, method="random", balance_labels=True, seed=0)
    assert again == select(pool, ["t0"] * 50, k=k, method="random", balance_labels=True, seed=0)
    assert again != select(pool, ["t0"] * 50, k=k, method="random", balance_labels=True, seed=1)


@pytest.mark.parametrize("method", ["knn", "mmr", "dpp", "bm25", "random", "vote-k"])
def test_rankings_with_quotas_hold_k_plus_labels_not_the_pool(method, monkeypatch):
    pool, qtexts, _, _ = tied_pool(n=300)
    lengths, objects = [], set()
    real_take = selectors.take

    def spy(ranking, req, qi, **kw):
        lengths.append(len(ranking))
        objects.add(id(ranking))
        return real_take(ranking, req, qi, **kw)

    monkeypatch.setattr(selectors, "take", spy)
    k, n_labels = 7, 3
    cap = math.ceil(k / n_labels)
    extra = {"graph_k": 6} if method == "vote-k" else {}
    select(pool, qtexts, k=k, method=method, balance_labels=True, **extra)
    if method == "vote-k":  # one query-independent order, shared, grown only as far as needed
        assert len(objects) == 1 and max(lengths) < len(pool) / 4
    elif method in ("mmr", "dpp"):
        assert max(lengths) <= k
    else:
        assert max(lengths) <= n_labels * cap


def test_balanced_bm25_peak_memory_does_not_grow_with_queries_times_pool():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    n = 6000
    records = [{"input": " ".join(rng.choice(words, 12)), "label": f"L{i % 4}"} for i in range(n)]
    pool = DemoPool.from_records(records, label_key="label", embeddings=unit_rows(n, 4, 0))
    queries = [" ".join(rng.choice(words, 4)) for _ in range(80)]
    select(pool, queries[:1], k=8, method="bm25", balance_labels=True)  # builds the index
    tracemalloc.start()
    try:
        select(pool, queries, k=8, method="bm25", balance_labels=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A full ranking per query would be 80 x 6,000 (index, score) pairs: about 40 MB of Python objects.
    assert peak < 4_000_000, peak
