"""``select``: demonstrations for a batch of queries, with self-exclusion, label quotas, a token budget
and an ordering, whatever the method.

Example:
    >>> pool = DemoPool.from_records(
    ...     [{"input": "a", "output": "1"}, {"input": "b", "output": "2"}, {"input": "c", "output": "3"}],
    ...     embeddings=[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], embedder=lambda t: [[1.0, 0.1]] * len(t))
    >>> [d["index"] for d in select(pool, ["a"], k=2)[0]]   # "a" itself is excluded; closest last
    [2, 1]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from counterpoint.selection.methods import (
    VoteK,
    bm25_full_scores,
    bm25_rankings,
    dpp_greedy,
    dpp_kernel,
    mmr_greedy,
    random_rankings,
)
from counterpoint.selection.pool import DemoPool, join_text

__all__ = ["METHODS", "ORDERS", "default_render", "select"]

METHODS = ("knn", "mmr", "dpp", "bm25", "random", "vote-k")
ORDERS = ("most_similar_last", "most_similar_first", "random")

# The keyword arguments each method takes, with their defaults.
_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "knn": {},
    "mmr": {"fetch_k": 20, "lambda_mult": 0.5},  # LangChain's defaults
    "dpp": {"candidates": 100, "scale": 0.1},  # OpenICL's / CEIL's defaults
    "bm25": {"k1": 1.5, "b": 0.75, "stopwords": "en"},  # bm25s' defaults, English stopwords
    "random": {},
    "vote-k": {"graph_k": 150, "rho": 10.0},  # the paper's k and rho
}
# Accepted by every method.
_COMMON_KWARGS = {"exclude_self": True, "batch_size": 256, "query_embeddings": None}


Ranking = list[tuple[int, float]]  # (pool index, score), most preferred first


def default_render(
    demos: Sequence[Mapping[str, Any]],
    query: Mapping[str, Any],
    *,
    text_keys: Sequence[str],
    query_keys: Sequence[str],
    label_key: str | None,
) -> str:
    """The plain prompt used to count tokens when ``select`` gets no ``render``.

    One block per demonstration, ``key: value`` on a line for each text key and then the label key,
    blocks separated by a blank line, and the query last with an empty label line::

        input: 2+2
        output: 4

        input: 3+3
        output:
    """
    blocks = []
    for demo in demos:
        lines = [f"{key}: {demo[key]}" for key in text_keys]
        if label_key is not None:
            lines.append(f"{label_key}: {demo[label_key]}")
        blocks.append("\n".join(lines))
    lines = [f"{key}: {query[key]}" for key in query_keys]
    if label_key is not None:
        lines.append(f"{label_key}:")
    blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _count_tokens(tokenizer: Any, text: str) -> int:
    if hasattr(tokenizer, "encode"):
        return len(tokenizer.encode(text))
    out = tokenizer(text)
    return len(out["input_ids"] if isinstance(out, Mapping) else out)


@dataclass
class _Request:
    """Validated arguments of one ``select`` call."""

    k: int
    method: str
    query_keys: tuple[str, ...]
    queries: list[dict[str, Any]]
    texts: list[str]
    exclude: list[list[int]]
    label_ids: np.ndarray | None  # (N,) label id per pool example, when balancing
    n_labels: int
    cap: int | None  # at most this many demos per label
    kwargs: dict[str, Any]


def select(
    pool: DemoPool,
    queries: Sequence[Mapping[str, Any] | str],
    k: int = 4,
    method: str = "knn",
    *,
    query_key: str | Sequence[str] | None = "input",
    balance_labels: bool = False,
    max_tokens: int | None = None,
    tokenizer: Any = None,
    render: Callable[[list[dict], dict], str] | None = None,
    order: str = "most_similar_last",
    seed: int = 0,
    **method_kwargs: Any,
) -> list[list[dict[str, Any]]]:
    """Pick ``k`` demonstrations from ``pool`` for every query, all queries at once.

    Args:
        pool: the demonstrations.
        queries: dicts (their ``query_key`` values are embedded) or strings.
        k: demonstrations per query (fewer only when the token budget drops some).
        method: ``"knn"`` (cosine similarity), ``"mmr"`` (``fetch_k=20``, ``lambda_mult=0.5``),
            ``"dpp"`` (``candidates=100``, ``scale=0.1``), ``"bm25"`` (``k1``, ``b``, ``stopwords``),
            ``"random"`` (seeded) or ``"vote-k"`` (query-independent; ``graph_k=150``, ``rho=10``).
        query_key: the key(s) of a query dict holding its text (joined by newlines like the pool's
            ``text_keys``); ``None`` uses the pool's ``text_keys``. A string query becomes
            ``{query_key: string}``.
        balance_labels: at most ``ceil(k / number of labels)`` demos per label (needs the pool's
            ``label_key``); the method's order decides which.
        max_tokens: demos plus query must fit in this many tokens of ``tokenizer``, counted on
            ``render(demos, query)``; the least relevant demos are dropped first. ``None``: no budget.
        tokenizer: the target model's tokenizer (anything with ``encode(str) -> list``).
        render: ``render(demos: list[dict], query: dict) -> str``, the prompt as it will be built
            (e.g. ``FewShotTemplate.render_text``); ``None`` uses :func:`default_render`.
        order: ``"most_similar_last"`` (the closest demo next to the query), ``"most_similar_first"``
            or ``"random"`` (seeded). "Similar" is the method's score; random selection has none and
            keeps its draw order.
        seed: seeds ``method="random"`` and ``order="random"``.
        **method_kwargs: the method's knobs above, and for every method ``exclude_self=True`` (a
            query never gets back an example with its id or its exact text), ``batch_size`` (query
            embedding) and ``query_embeddings`` (precomputed ``(Q, D)``, skips the embedder).

    Returns:
        Per query, a list of ``{"index": int, "score": float, "example": dict}`` in prompt order.
        ``score`` is the cosine similarity (knn, mmr, dpp), the BM25 score, the vote-k score, or 0.0
        (random).
    """
    req = _validate(
        pool, queries, k, method, query_key, balance_labels, max_tokens, tokenizer, order, method_kwargs
    )
    if max_tokens is not None:
        render_fn = render or _default_render(pool, req.query_keys)
        for qi, query in enumerate(req.queries):
            alone = _count_tokens(tokenizer, render_fn([], query))
            if alone > max_tokens:
                raise ValueError(
                    f"max_tokens={max_tokens} is too small for query {qi}: the query alone takes {alone} "
                    "tokens; raise max_tokens"
                )
    rankings = _rank(pool, req, seed)
    chosen = [_take(r, req, qi) for qi, r in enumerate(rankings)]

    rng = np.random.default_rng(seed)
    results = []
    for qi, picks in enumerate(chosen):
        # Most relevant first: by score, the method's own order breaking ties.
        relevance = sorted(range(len(picks)), key=lambda j: -picks[j][1])
        shuffle = rng.permutation(len(picks)).tolist() if order == "random" else None
        m = len(picks)
        if max_tokens is not None:
            while m > 0:
                demos = _ordered(picks, relevance[:m], order, shuffle)
                if (
                    _count_tokens(tokenizer, render_fn([pool.records[i] for i, _ in demos], req.queries[qi]))
                    <= max_tokens
                ):
                    break
                m -= 1
        demos = _ordered(picks, relevance[:m], order, shuffle)
        results.append([{"index": i, "score": s, "example": dict(pool.records[i])} for i, s in demos])
    return results


def _ordered(picks: Ranking, kept: list[int], order: str, shuffle: list[int] | None) -> Ranking:
    """``kept`` (positions into ``picks``, most relevant first) in prompt order."""
    if order == "most_similar_first":
        return [picks[j] for j in kept]
    if order == "most_similar_last":
        return [picks[j] for j in reversed(kept)]
    keep = set(kept)
    return [picks[j] for j in shuffle if j in keep]


def _default_render(pool: DemoPool, query_keys: tuple[str, ...]) -> Callable[[list[dict], dict], str]:
    def render(demos: list[dict], query: dict) -> str:
        return default_render(
            demos, query, text_keys=pool.text_keys, query_keys=query_keys, label_key=pool.label_key
        )

    return render


# ------------------------------------------------------------------------------------------ validation


def _validate(pool, queries, k, method, query_key, balance_labels, max_tokens, tokenizer, order, kwargs):
    if not isinstance(pool, DemoPool):
        raise TypeError(f"pool must be a DemoPool, got {type(pool).__name__}")
    if len(pool) == 0:
        raise ValueError("the pool is empty; add examples before selecting")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > len(pool):
        raise ValueError(f"k={k} is larger than the pool ({len(pool)} examples); lower k or add examples")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
        if tokenizer is None:
            raise ValueError("max_tokens needs tokenizer= (the target model's tokenizer) to count tokens")
    allowed = {**_COMMON_KWARGS, **_METHOD_KWARGS[method]}
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"method={method!r} takes no argument(s) {unknown}; valid: {sorted(allowed)}")
    opts = {**allowed, **kwargs}
    _check_method_kwargs(method, opts, k)

    if isinstance(queries, (str, Mapping)) or not isinstance(queries, Sequence):
        raise ValueError(f"queries must be a list of dicts or strings, got {type(queries).__name__}")
    if len(queries) == 0:
        raise ValueError("queries is empty: pass at least one query")
    keys = (
        pool.text_keys
        if query_key is None
        else ((query_key,) if isinstance(query_key, str) else tuple(query_key))
    )
    qdicts, texts = [], []
    for qi, q in enumerate(queries):
        if isinstance(q, str):
            q = {keys[0]: q}
        elif not isinstance(q, Mapping):
            raise ValueError(f"query {qi} must be a dict or a string, got {type(q).__name__}")
        missing = [key for key in keys if key not in q]
        if missing:
            raise ValueError(
                f"query {qi} has no key {missing[0]!r} (query_key={query_key!r}); it has keys {sorted(q)}. "
                f"Pass query_key= naming the key that holds the query text (the pool embeds {list(pool.text_keys)})"
            )
        qdicts.append(dict(q))
        texts.append(join_text(q, keys))

    # Self-exclusion: pool entries with the query's id or exactly its text.
    exclude = []
    for q, text in zip(qdicts, texts, strict=False):
        banned: set[int] = set()
        if opts["exclude_self"]:
            banned.update(pool.indices_with_text(text))
            if pool.id_key is not None and pool.id_key in q:
                banned.update(pool.indices_with_id(q[pool.id_key]))
        exclude.append(sorted(banned))

    label_ids, n_labels, cap = None, 0, None
    if balance_labels:
        if pool.label_key is None:
            raise ValueError("balance_labels=True needs a pool built with label_key=")
        values = pool.labels
        uniq = {v: i for i, v in enumerate(dict.fromkeys(values))}
        label_ids = np.array([uniq[v] for v in values], dtype=np.int64)
        n_labels = len(uniq)
        cap = math.ceil(k / n_labels)
    for qi, banned in enumerate(exclude):
        room = len(pool) - len(banned)
        if label_ids is not None:
            per_label = np.bincount(label_ids, minlength=n_labels)
            if banned:
                per_label = per_label - np.bincount(label_ids[banned], minlength=n_labels)
            room = int(np.minimum(per_label, cap).sum())
        if room < k:
            why = f" with at most {cap} per label" if label_ids is not None else ""
            raise ValueError(
                f"k={k} is larger than what query {qi} can get{why}: {room} examples are left after "
                f"excluding its {len(banned)} copies of itself from the pool of {len(pool)}"
            )
    return _Request(k, method, keys, qdicts, texts, exclude, label_ids, n_labels, cap, opts)


def _check_method_kwargs(method: str, opts: dict[str, Any], k: int) -> None:
    def positive_int(name: str) -> None:
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")

    positive_int("batch_size")
    if method == "mmr":
        positive_int("fetch_k")
        if opts["fetch_k"] < k:
            raise ValueError(f"fetch_k={opts['fetch_k']} must be at least k={k}")
        if not 0.0 <= float(opts["lambda_mult"]) <= 1.0:
            raise ValueError(f"lambda_mult must be in [0, 1], got {opts['lambda_mult']!r}")
    elif method == "dpp":
        positive_int("candidates")
        if opts["candidates"] < k:
            raise ValueError(f"candidates={opts['candidates']} must be at least k={k}")
        if not float(opts["scale"]) > 0:
            raise ValueError(f"scale must be positive, got {opts['scale']!r}")
    elif method == "vote-k":
        positive_int("graph_k")
        if not float(opts["rho"]) > 1:
            raise ValueError(f"rho must be greater than 1, got {opts['rho']!r}")
    elif method == "bm25" and (float(opts["k1"]) < 0 or not 0.0 <= float(opts["b"]) <= 1.0):
        raise ValueError(f"bm25 needs k1 >= 0 and 0 <= b <= 1, got k1={opts['k1']!r}, b={opts['b']!r}")


# ------------------------------------------------------------------------------------------ ranking


def _query_embeddings(pool: DemoPool, req: _Request) -> torch.Tensor:
    given = req.kwargs["query_embeddings"]
    if given is not None:
        emb = pool.check_query_embeddings(given)
        if emb.shape[0] != len(req.queries):
            raise ValueError(
                f"query_embeddings has {emb.shape[0]} rows for {len(req.queries)} queries; pass one row a query"
            )
        return emb
    return pool.embed_queries(req.texts, batch_size=req.kwargs["batch_size"])


def _label_subsets(req: _Request) -> list[np.ndarray]:
    return [np.flatnonzero(req.label_ids == lab) for lab in range(req.n_labels)]


def _search_candidates(
    pool: DemoPool, emb: torch.Tensor, req: _Request, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, indices)`` ``(Q, C)``: top ``n`` overall, or with label quotas the top
    ``max(cap, ceil(n / labels))`` of every label (``-inf`` / ``-1`` padding)."""
    if req.label_ids is None:
        return pool.search(emb, n, exclude=req.exclude)
    per = max(req.cap, math.ceil(n / req.n_labels))
    parts = [pool.search(emb, per, exclude=req.exclude, subset=sub.tolist()) for sub in _label_subsets(req)]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def _sorted_rankings(scores: torch.Tensor, idx: torch.Tensor) -> list[Ranking]:
    s, pos = scores.sort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, pos)
    return [
        [
            (int(i), float(v))
            for i, v in zip(ri.tolist(), rs.tolist(), strict=False)
            if v != float("-inf") and i >= 0
        ]
        for ri, rs in zip(idx, s, strict=False)
    ]


def _rank(pool: DemoPool, req: _Request, seed: int) -> list[Ranking]:
    method, k, opts = req.method, req.k, req.kwargs
    extra = max((len(e) for e in req.exclude), default=0)
    if method == "knn":
        emb = _query_embeddings(pool, req)
        return _sorted_rankings(*_search_candidates(pool, emb, req, req.cap or k))

    if method in ("mmr", "dpp"):
        emb = _query_embeddings(pool, req)
        n = opts["fetch_k"] if method == "mmr" else opts["candidates"]
        scores, idx = _search_candidates(pool, emb, req, min(n, len(pool)))
        valid = (scores > float("-inf")) & (idx >= 0)  # (Q, C)
        safe = idx.clamp(min=0)
        cand = pool.embeddings[safe]  # (Q, C, D)
        rel = scores.masked_fill(~valid, -1.0)
        labels = None if req.label_ids is None else torch.from_numpy(req.label_ids)[safe]
        if method == "mmr":
            pos = mmr_greedy(
                rel, cand, k, float(opts["lambda_mult"]), valid=valid, cand_labels=labels, cap=req.cap
            )
        else:
            kernel = dpp_kernel(scores.masked_fill(~valid, -1.0), cand, float(opts["scale"]))
            pos = dpp_greedy(kernel, k, valid=valid, rel=rel, cand_labels=labels, cap=req.cap)
        return [
            [(int(safe[q, p]), float(scores[q, p])) for p in row.tolist() if p >= 0]
            for q, row in enumerate(pos)
        ]

    if method == "bm25":
        retriever = _bm25_index(pool, opts)
        if req.label_ids is None:
            fetch = min(k + extra, len(pool))
            docs, sc = bm25_rankings(retriever, req.texts, fetch, stopwords=opts["stopwords"])
            return [list(zip(d.tolist(), s.tolist(), strict=False)) for d, s in zip(docs, sc, strict=False)]
        # With label quotas walk each query's full ranking (score, then index), so every label's best
        # examples are there however few words match.
        scores = bm25_full_scores(retriever, req.texts, stopwords=opts["stopwords"])
        rankings = []
        for row in scores:
            order = np.lexsort((np.arange(len(row)), -row))
            rankings.append([(int(i), float(row[i])) for i in order])
        return rankings

    if method == "random":
        rng = np.random.default_rng(seed)
        length = len(pool) if req.label_ids is not None else min(len(pool), k + extra)
        draws = random_rankings(len(pool), len(req.queries), length, rng)
        return [[(int(i), 0.0) for i in row] for row in draws]

    # vote-k: one query-independent order, grown until every query can take k from it.
    vote = _vote_k(pool, opts)
    rankings = []
    for qi in range(len(req.queries)):
        need = k + len(req.exclude[qi])
        while True:
            vote.extend(need)
            picks = _take(
                [(i, s) for i, s in zip(vote.order, vote.scores, strict=False)], req, qi, strict=False
            )
            if len(picks) == k or len(vote.order) == len(pool):
                break
            need *= 2
        rankings.append(list(zip(vote.order, vote.scores, strict=False)))
    return rankings


def _take(ranking: Ranking, req: _Request, qi: int, *, strict: bool = True) -> Ranking:
    """Walk a ranking: skip excluded entries and entries of labels already at quota, stop at k."""
    banned = set(req.exclude[qi])
    counts: dict[int, int] = {}
    out: Ranking = []
    for i, s in ranking:
        if len(out) == req.k:
            break
        if i in banned:
            continue
        if req.label_ids is not None:
            lab = int(req.label_ids[i])
            if counts.get(lab, 0) >= req.cap:
                continue
            counts[lab] = counts.get(lab, 0) + 1
        out.append((i, s))
        banned.add(i)
    if strict and len(out) < req.k:
        raise RuntimeError(
            f"query {qi}: the {req.method} search returned only {len(out)} of k={req.k} demonstrations; "
            "with an approximate faiss index raise nprobe / ef_search, or use exact search"
        )
    return out


def _bm25_index(pool: DemoPool, opts: dict[str, Any]) -> Any:
    import bm25s

    key = ("bm25", float(opts["k1"]), float(opts["b"]), str(opts["stopwords"]))
    if key not in pool.cache:
        tokens = bm25s.tokenize(pool.texts, stopwords=opts["stopwords"], show_progress=False)
        if not tokens.vocab:
            raise ValueError(
                "method='bm25': the pool's texts hold no indexable words (bm25s keeps words of 2+ "
                f"characters that are not stopwords={opts['stopwords']!r})"
            )
        retriever = bm25s.BM25(k1=float(opts["k1"]), b=float(opts["b"]))
        retriever.index(tokens, show_progress=False)
        pool.cache[key] = retriever
    return pool.cache[key]


def _vote_k(pool: DemoPool, opts: dict[str, Any]) -> VoteK:
    g = min(int(opts["graph_k"]), len(pool) - 1)
    key = ("vote-k", g, float(opts["rho"]))
    if key not in pool.cache:
        if g < 1:
            raise ValueError("vote-k needs a pool of at least 2 examples")
        _, nbrs = pool.search(pool.embeddings, g, exclude=[[i] for i in range(len(pool))])
        pool.cache[key] = VoteK(nbrs, rho=float(opts["rho"]))
    return pool.cache[key]
