"""Every selector for a batch of queries against a naive one-query-at-a-time reference."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from counterpoint.selection import METHODS, DemoPool, select
from counterpoint.selection.methods import DPP_EPSILON
from counterpoint.selection.registry import get_method

from .conftest import LookupEmbedder, make_pool, unit_rows


def indices(result):
    return [[d["index"] for d in row] for row in result]


def naive_topk(q: np.ndarray, pool_mat: np.ndarray, n: int, banned=()) -> list[int]:
    """One query: pool indices by decreasing cosine similarity, skipping ``banned``."""
    sims = (pool_mat.astype(np.float64) @ q.astype(np.float64)).tolist()
    order = sorted((i for i in range(len(sims)) if i not in banned), key=lambda i: -sims[i])
    return order[:n]


# ------------------------------------------------------------------------------------------ kNN


@pytest.mark.parametrize("order", ["most_similar_last", "most_similar_first"])
def test_knn_matches_naive_and_orders(order):
    pool, qtexts, pool_mat, q_mat = make_pool(n=80, n_queries=11)
    got = select(pool, qtexts, k=6, order=order)
    for row, q in zip(got, q_mat, strict=True):
        want = naive_topk(q, pool_mat, 6)
        if order == "most_similar_last":
            want = want[::-1]
        assert [d["index"] for d in row] == want
        for d in row:
            assert d["score"] == pytest.approx(float(pool_mat[d["index"]] @ q), abs=1e-5)
            assert d["example"] == pool.records[d["index"]]


def test_random_order_is_seeded_permutation_of_knn():
    pool, qtexts, _, _ = make_pool()
    base = indices(select(pool, qtexts, k=5, order="most_similar_first"))
    a = indices(select(pool, qtexts, k=5, order="random", seed=3))
    b = indices(select(pool, qtexts, k=5, order="random", seed=3))
    c = indices(select(pool, qtexts, k=5, order="random", seed=4))
    assert a == b
    assert a != c
    assert [sorted(r) for r in a] == [sorted(r) for r in base]


# ------------------------------------------------------------------------------------------ MMR


@pytest.mark.parametrize(("fetch_k", "lambda_mult"), [(20, 0.5), (13, 0.2), (30, 0.9)])
def test_mmr_matches_langchain_one_query_at_a_time(fetch_k, lambda_mult):
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    pool, qtexts, pool_mat, q_mat = make_pool(n=90, d=8, n_queries=12)
    got = select(pool, qtexts, k=6, method="mmr", fetch_k=fetch_k, lambda_mult=lambda_mult)
    for row, q in zip(got, q_mat, strict=True):
        cand = naive_topk(q, pool_mat, fetch_k)
        picked = maximal_marginal_relevance(q, [pool_mat[i].tolist() for i in cand], lambda_mult, 6)
        assert sorted(d["index"] for d in row) == sorted(cand[p] for p in picked)


def test_mmr_greedy_pick_order_matches_langchain():
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    from counterpoint.selection.methods import mmr_greedy

    cand = torch.from_numpy(unit_rows(4 * 15, 8, seed=9)).reshape(4, 15, 8)
    q = torch.from_numpy(unit_rows(4, 8, seed=10))
    rel = torch.einsum("qfd,qd->qf", cand, q)
    picks = mmr_greedy(rel, cand, 7, 0.3, valid=torch.ones(4, 15, dtype=torch.bool))
    for b in range(4):
        want = maximal_marginal_relevance(q[b].numpy(), cand[b].tolist(), 0.3, 7)
        assert picks[b].tolist() == want


# ------------------------------------------------------------------------------------------ DPP


def naive_dpp(q: np.ndarray, pool_mat: np.ndarray, n_cand: int, k: int, scale: float) -> list[int]:
    """One query: OpenICL's kernel, then greedily add the candidate maximising det(L_S) (no Cholesky)."""
    cand = naive_topk(q, pool_mat, n_cand)
    e = pool_mat[cand].astype(np.float64)
    rel = (e @ q.astype(np.float64) + 1) / 2
    rel = np.exp((rel - rel.max()) / (2 * scale))
    kernel = rel[None] * ((e @ e.T + 1) / 2) * rel[:, None]
    chosen: list[int] = []
    fell_back = False
    for _ in range(k):
        if not fell_back:
            base = np.linalg.det(kernel[np.ix_(chosen, chosen)]) if chosen else 1.0
            gains = [
                -np.inf if j in chosen else np.linalg.det(kernel[np.ix_(chosen + [j], chosen + [j])]) / base
                for j in range(len(cand))
            ]
            best = int(np.argmax(gains))
            fell_back = gains[best] <= DPP_EPSILON
        if fell_back:  # gains ran out: the rest follow relevance
            best = max((j for j in range(len(cand)) if j not in chosen), key=lambda j: rel[j])
        chosen.append(best)
    return [cand[j] for j in chosen]


@pytest.mark.parametrize(("n_cand", "scale"), [(100, 0.1), (25, 0.5), (40, 0.05)])
def test_dpp_matches_naive_log_det_greedy(n_cand, scale):
    pool, qtexts, pool_mat, q_mat = make_pool(n=150, d=48, n_queries=8)
    got = select(pool, qtexts, k=5, method="dpp", candidates=n_cand, scale=scale)
    for row, q in zip(got, q_mat, strict=True):
        assert sorted(d["index"] for d in row) == sorted(naive_dpp(q, pool_mat, n_cand, 5, scale))


def test_dpp_pick_order_matches_naive_and_differs_from_knn():
    from counterpoint.selection.methods import dpp_greedy, dpp_kernel

    pool, _, pool_mat, q_mat = make_pool(n=150, d=48, n_queries=4)
    cand = [naive_topk(q, pool_mat, 30) for q in q_mat]
    emb = torch.from_numpy(np.stack([pool_mat[c] for c in cand]))  # (Q, 30, D)
    rel = torch.einsum("qfd,qd->qf", emb, torch.from_numpy(q_mat))
    picks = dpp_greedy(dpp_kernel(rel, emb, 0.5), 6, valid=torch.ones(4, 30, dtype=torch.bool), rel=rel)
    for b, q in enumerate(q_mat):
        assert [cand[b][p] for p in picks[b].tolist()] == naive_dpp(q, pool_mat, 30, 6, 0.5)
    assert any(sorted(p.tolist()) != list(range(6)) for p in picks)  # diversity changed something


def test_dpp_rank_deficient_kernel_falls_back_to_relevance():
    # In 3 dimensions the kernel has rank <= 4: the later picks must follow relevance, not noise.
    pool, qtexts, pool_mat, q_mat = make_pool(n=40, d=3, n_queries=5)
    got = select(pool, qtexts, k=8, method="dpp", candidates=20, scale=0.1)
    for row, q in zip(got, q_mat, strict=True):
        assert sorted(d["index"] for d in row) == sorted(naive_dpp(q, pool_mat, 20, 8, 0.1))


# ------------------------------------------------------------------------------------------ BM25, vote-k, random

DOCS = [
    "the cat sat on the mat",
    "dogs bark at the mail carrier",
    "a cat and a dog play in the garden",
    "stock markets fell sharply today",
    "the mat was red and the cat was black",
    "gardening tips for the spring season",
    "markets rallied after the announcement",
    "the dog chased the cat up a tree",
]


def test_bm25_matches_bm25s_one_query_at_a_time():
    import bm25s

    pool = DemoPool.from_records([{"input": t} for t in DOCS], embeddings=np.eye(8))
    queries = ["cat on a mat", "markets today", "dog in the garden"]
    got = select(pool, queries, k=3, method="bm25", order="most_similar_first")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(DOCS, stopwords="en", show_progress=False), show_progress=False)
    for row, text in zip(got, queries, strict=True):
        tokens = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)
        # bm25s' scores of every document, ordered by our one tie rule (score, then index):
        # bm25s' own top-k breaks ties (here the documents scoring 0) in no documented order.
        docs, scores = retriever.retrieve(tokens, k=len(DOCS), show_progress=False)
        ranked = sorted(zip(docs[0].tolist(), scores[0].tolist(), strict=True), key=lambda p: (-p[1], p[0]))
        assert [d["index"] for d in row] == [i for i, _ in ranked[:3]]
        assert [d["score"] for d in row] == pytest.approx([s for _, s in ranked[:3]])


def naive_vote_k(pool_mat: np.ndarray, graph_k: int, n: int, rho: float = 10.0) -> list[int]:
    """Su et al.'s reference loop (MetaICL repo's ``vote_k``), ties broken by lowest index."""
    sims = pool_mat @ pool_mat.T
    vote_stat = collections.defaultdict(list)
    for i in range(len(pool_mat)):
        nbrs = [j for j in np.argsort(-sims[i], kind="stable") if j != i][:graph_k]
        for j in nbrs:
            vote_stat[int(j)].append(i)
    selected: list[int] = []
    times = collections.defaultdict(int)
    while len(selected) < n:
        scores = {}
        for u in range(len(pool_mat)):
            if u in selected:
                continue
            scores[u] = sum(rho ** (-times[v]) for v in vote_stat[u] if v not in selected)
        best = max(scores, key=lambda u: (scores[u], -u))
        selected.append(best)
        for v in vote_stat[best]:
            times[v] += 1
    return selected


def test_vote_k_matches_reference_and_is_query_independent():
    pool, qtexts, pool_mat, _ = make_pool(n=70, d=6, n_queries=4)
    got = select(pool, qtexts, k=6, method="vote-k", graph_k=5, order="most_similar_first")
    want = naive_vote_k(pool_mat, 5, 6)
    for row in got:
        # Ordered by vote score (decreasing), the greedy order as ties are broken by it.
        assert sorted(d["index"] for d in row) == sorted(want)


def test_random_is_seeded_and_distinct():
    pool, qtexts, _, _ = make_pool()
    a = indices(select(pool, qtexts, k=7, method="random", seed=1))
    assert a == indices(select(pool, qtexts, k=7, method="random", seed=1))
    assert a != indices(select(pool, qtexts, k=7, method="random", seed=2))
    assert all(len(set(r)) == 7 for r in a)


# ------------------------------------------------------------------------------------------ constraints

# The methods that rank without the target model; lm and se2 (which need a scorer and labelled answers)
# are checked for self-exclusion, quotas and budgets against their naive references in test_lm_methods.py.
EMBEDDING_METHODS = [m for m in METHODS if not get_method(m).needs_scorer]


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
def test_self_exclusion_by_text_and_id_with_duplicates_in_pool(method):
    d = 16
    mat = unit_rows(40, d, seed=11)
    texts = [f"ex {i} words here" for i in range(40)]
    # Three exact copies of example 0's text (with other ids) and one near copy sharing its id.
    texts[10] = texts[20] = texts[30] = texts[0]
    mat[10] = mat[20] = mat[30] = mat[0]
    records = [{"input": t, "id": f"id{i}"} for i, t in enumerate(texts)]
    records[5]["id"] = "id0"
    pool = DemoPool.from_records(records, embedder=LookupEmbedder(dict(zip(texts, mat, strict=False))))
    query = {"input": texts[0], "id": "id0"}
    banned = {0, 5, 10, 20, 30}
    extra = {"graph_k": 10} if method == "vote-k" else {}
    for row in indices(select(pool, [query, query], k=12, method=method, **extra)):
        assert len(row) == 12 and not set(row) & banned
    # Opting out gives them back (kNN: the four copies are the best hits).
    if method == "knn":
        row = indices(select(pool, [query], k=4, exclude_self=False, order="most_similar_first"))[0]
        assert sorted(row) == [0, 10, 20, 30]


@pytest.mark.parametrize("method", EMBEDDING_METHODS)
@pytest.mark.parametrize(("k", "n_labels"), [(6, 3), (7, 3), (4, 5)])
def test_label_quotas(method, k, n_labels):
    pool, qtexts, _, _ = make_pool(n=90, d=16, labels=n_labels, n_queries=6)
    cap = math.ceil(k / n_labels)
    extra = {"graph_k": 10} if method == "vote-k" else {}
    got = select(pool, qtexts, k=k, method=method, balance_labels=True, **extra)
    for row in got:
        assert len(row) == k
        counts = collections.Counter(d["example"]["label"] for d in row)
        assert max(counts.values()) <= cap
        assert min(counts.values()) >= k - (len(counts) - 1) * cap


def test_label_quotas_knn_equals_per_label_brute_force():
    pool, qtexts, pool_mat, q_mat = make_pool(n=90, d=16, labels=3, n_queries=6)
    got = select(pool, qtexts, k=6, balance_labels=True)
    labels = np.array([i % 3 for i in range(90)])
    for row, q in zip(got, q_mat, strict=True):
        want = []
        for lab in range(3):
            members = np.flatnonzero(labels == lab)
            want += [members[j] for j in naive_topk(q, pool_mat[members], 2)]
        assert sorted(d["index"] for d in row) == sorted(want)


def test_label_quota_impossible_is_an_error():
    records = [{"input": f"t{i}", "label": "a" if i < 9 else "b"} for i in range(10)]
    pool = DemoPool.from_records(records, label_key="label", embeddings=unit_rows(10, 4, 0))
    with pytest.raises(
        ValueError, match=r"k=6 is larger than what query 0 can get with at most 3 per label: 4"
    ):
        select(pool, ["zz"], k=6, balance_labels=True, query_embeddings=unit_rows(1, 4, 1))
