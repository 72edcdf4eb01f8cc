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
from typing import Any

import numpy as np

from counterpoint.errors import OptionError
from counterpoint.selection import registry
from counterpoint.selection.pool import DemoPool, join_text
from counterpoint.selection.ranking import Ranking, SelectionRequest, take
from counterpoint.selection.spec import check_positive_int

__all__ = ["check_arguments", "METHODS", "ORDERS", "default_render", "select"]

METHODS: tuple[str, ...] = tuple(registry.METHODS)  # the names; the specs are registry.METHODS
ORDERS = ("most_similar_last", "most_similar_first", "random")

# Accepted by every method, with their defaults (``scorer`` only by the methods that need one).
_COMMON_KWARGS = {"exclude_self": True, "batch_size": 256, "query_embeddings": None, "scorer": None}


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
        method: a name in :data:`counterpoint.selection.registry.METHODS`: ``"knn"`` (cosine
            similarity), ``"mmr"`` (``fetch_k=20``, ``lambda_mult=0.5``), ``"dpp"``
            (``candidates=100``, ``scale=0.1``), ``"bm25"`` (``k1``, ``b``, ``stopwords``),
            ``"random"`` (seeded), ``"vote-k"`` (query-independent; ``graph_k=150``, ``rho=10``), or the
            LM-scored ``"lm"`` (``candidates=16`` nearest re-ranked by the target model's one-shot score) and
            ``"se2"`` (Se²'s beam search over demonstration sequences; ``candidates=8``, ``beam_size=3``),
            both with ``target="prediction" | "labels"`` and ``answers_key`` (need ``scorer=``).
        query_key: the key(s) of a query dict holding its text (joined by newlines like the pool's
            ``text_keys``); ``None`` uses the pool's ``text_keys``. A string query becomes
            ``{query_key: string}``.
        balance_labels: at most ``ceil(k / number of labels)`` demos per label (needs the pool's
            ``label_key``); the method's order decides which. Memory stays ``queries x (k +
            labels)`` whatever the pool size.
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
            embedding) and ``query_embeddings`` (precomputed ``(Q, D)``, skips the embedder). The
            LM-scored methods (``"lm"``, ``"se2"``) need ``scorer=`` (an
            :class:`~counterpoint.selection.lm_scorer.LMScorer`: the target model, its tokenizer and the
            prompt template).

    Returns:
        Per query, a list of ``{"index": int, "score": float, "example": dict}`` in prompt order.
        ``score`` is the cosine similarity (knn, mmr, dpp), the BM25 score, the vote-k score, 0.0
        (random), the model's one-shot score (lm), or the sequence's running score after the
        demonstration was chosen (se2).
    """
    req = _validate(
        pool, queries, k, method, query_key, balance_labels, max_tokens, tokenizer, order, seed, method_kwargs
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
    spec = registry.get_method(req.method)
    if max_tokens is not None:
        req.max_tokens = max_tokens
        req.count_tokens = lambda demos, query: _count_tokens(tokenizer, render_fn(demos, query))
    rankings = spec.rank(pool, req)
    # A method that searches within the budget may stop short of k; any other must reach it.
    strict = not (spec.budget_aware and max_tokens is not None)
    chosen = [take(r, req, qi, strict=strict) for qi, r in enumerate(rankings)]

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


def check_arguments(
    method: str, k: int, pool_size: int | None = None, **method_kwargs: Any
) -> dict[str, Any]:
    """The checks of a selection that need neither the pool's embeddings nor the queries: the method, ``k``
    (against the pool's size when known) and the method's own keyword arguments.

    A command line calls it before any embedder loads. Returns the keyword arguments with defaults filled in.

    Raises:
        ValueError: naming the bad argument (an :class:`~counterpoint.errors.OptionError` for values).
    """
    spec = registry.get_method(method)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if pool_size is not None and k > pool_size:
        raise OptionError("k", k, f"is larger than the pool ({pool_size} examples); lower k or add examples")
    allowed = {**_COMMON_KWARGS, **spec.defaults}
    unknown = sorted(set(method_kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"method={method!r} takes no argument(s) {unknown}; valid: {sorted(allowed)}")
    opts = {**allowed, **method_kwargs}
    check_positive_int(opts, "batch_size")
    if spec.check is not None:
        spec.check(opts, k)
    return opts


def _check_scorer(spec: Any, scorer: Any) -> None:
    if scorer is None:
        if spec.needs_scorer:
            raise ValueError(
                f"method={spec.name!r} scores demonstrations with the target model: pass "
                "scorer=LMScorer.from_template(model, tokenizer, template) (counterpoint.selection.LMScorer)"
            )
        return
    if not spec.needs_scorer:
        raise ValueError(f"method={spec.name!r} takes no scorer (only the LM-scored methods do)")
    if not (callable(getattr(scorer, "score", None)) and callable(getattr(scorer, "answer_text", None))):
        raise OptionError("scorer", type(scorer).__name__, "must be a counterpoint.selection.LMScorer")


def _validate(
    pool, queries, k, method, query_key, balance_labels, max_tokens, tokenizer, order, seed, kwargs
) -> SelectionRequest:
    if not isinstance(pool, DemoPool):
        raise TypeError(f"pool must be a DemoPool, got {type(pool).__name__}")
    if len(pool) == 0:
        raise ValueError("the pool is empty; add examples before selecting")
    opts = check_arguments(method, k, len(pool), **kwargs)
    _check_scorer(registry.get_method(method), opts["scorer"])
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
        if tokenizer is None:
            raise ValueError("max_tokens needs tokenizer= (the target model's tokenizer) to count tokens")

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
    return SelectionRequest(k, method, keys, qdicts, texts, exclude, label_ids, n_labels, cap, opts, seed)
