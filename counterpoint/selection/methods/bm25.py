"""BM25: the pool examples sharing the most informative words with the query (Robertson & Zaragoza
2009), scored by ``bm25s`` (Lucene's idf) over the pool's embedded texts. No embeddings involved.

Each query's scores over the whole pool are computed one query at a time (as ``bm25s`` does) and
only its best ``k`` (or each label's best ``cap`` with quotas) are kept, by the one tie rule: equal
scores (often 0, when no word matches) go by pool index, lowest first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from counterpoint.errors import OptionError
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Ranking, SelectionRequest, top_by_score_then_index
from counterpoint.selection.spec import MethodKwarg, MethodSpec

__all__ = ["SPEC", "bm25_full_scores", "bm25_index", "bm25_rankings", "rank"]


def bm25_index(pool: DemoPool, k1: float = 1.5, b: float = 0.75, stopwords: Any = "en") -> Any:
    """The pool's ``bm25s.BM25`` index for these parameters, built once and kept in ``pool.cache``."""
    import bm25s

    key = ("bm25", float(k1), float(b), str(stopwords))
    if key not in pool.cache:
        tokens = bm25s.tokenize(pool.texts, stopwords=stopwords, show_progress=False)
        if not tokens.vocab:
            raise ValueError(
                "method='bm25': the pool's texts hold no indexable words (bm25s keeps words of 2+ "
                f"characters that are not stopwords={stopwords!r})"
            )
        retriever = bm25s.BM25(k1=float(k1), b=float(b))
        retriever.index(tokens, show_progress=False)
        pool.cache[key] = retriever
    return pool.cache[key]


def bm25_full_scores(
    retriever: Any, queries: Sequence[str], *, stopwords: str | list[str] | None = "en"
) -> Iterator[np.ndarray]:
    """BM25 score of every pool entry for each query, one query at a time: yields ``(N,)`` float32."""
    import bm25s

    tokens = bm25s.tokenize(list(queries), stopwords=stopwords, return_ids=False, show_progress=False)
    vocab = retriever.vocab_dict
    for query in tokens:
        known = [t for t in query if t in vocab]  # words the pool never uses score 0 everywhere
        if known:
            yield np.asarray(retriever.get_scores(known), dtype=np.float32)
        else:
            yield np.zeros(retriever.scores["num_docs"], dtype=np.float32)


def bm25_rankings(
    retriever: Any,
    queries: Sequence[str],
    k: int,
    *,
    weight_mask: np.ndarray | None = None,
    stopwords: str | list[str] | None = "en",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k pool entries by BM25 for a batch of queries, by the tie rule (score, then index).

    Args:
        retriever: a ``bm25s.BM25`` index of the pool.
        queries: the query texts.
        k: entries per query (at most the pool size).
        weight_mask: ``(N,)`` multiplies the scores (0 removes an entry from the running).
        stopwords: as the index was built with.

    Returns:
        ``(indices, scores)``, both ``(Q, k)``.
    """
    out_i, out_s = [], []
    for row in bm25_full_scores(retriever, queries, stopwords=stopwords):
        if weight_mask is not None:
            row = row * np.asarray(weight_mask, dtype=np.float32)
        top = top_by_score_then_index(row, k)
        out_i.append(top)
        out_s.append(row[top])
    return np.stack(out_i).astype(np.int64), np.stack(out_s).astype(np.float32)


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, its ``k`` best (each label's ``cap`` best with quotas) by score, then index."""
    opts = req.kwargs
    retriever = bm25_index(pool, opts["k1"], opts["b"], opts["stopwords"])
    members = req.label_members() if req.label_ids is not None else None
    rankings = []
    for qi, row in enumerate(bm25_full_scores(retriever, req.texts, stopwords=opts["stopwords"])):
        row[req.exclude[qi]] = -np.inf  # (N,) scores of this query only; excluded entries out
        if members is None:
            top = top_by_score_then_index(row, req.k)
        else:  # each label's best cap, then all of them by the tie rule
            top = np.concatenate([m[top_by_score_then_index(row[m], req.cap)] for m in members])
            top = top[np.lexsort((top, -row[top]))]
        rankings.append([(int(i), float(row[i])) for i in top if row[i] != -np.inf])
    return rankings


def check(options: Mapping[str, Any], k: int) -> None:
    if float(options["k1"]) < 0 or not 0.0 <= float(options["b"]) <= 1.0:
        bad = "k1" if float(options["k1"]) < 0 else "b"
        raise OptionError(bad, options[bad], "must be >= 0" if bad == "k1" else "must be in [0, 1]")


SPEC = MethodSpec(
    name="bm25",
    summary="BM25 word overlap with the query (bm25s, Lucene idf); no embeddings",
    rank=rank,
    needs_embedder=False,
    kwargs=(
        # bm25s' defaults, English stopwords.
        MethodKwarg("k1", 1.5, "term-frequency saturation, >= 0", float),
        MethodKwarg("b", 0.75, "document-length normalisation, in [0, 1]", float),
        MethodKwarg("stopwords", "en", "stopword list bm25s drops (a language code)", str),
    ),
    check=check,
    position=3,
)
