"""What every selection method shares: the validated request, the one tie rule, label quotas.

A method's ``rank`` (see :class:`~counterpoint.selection.spec.MethodSpec`) turns a
:class:`SelectionRequest` into one *ranking* per query: ``(pool index, score)`` pairs, most preferred
first. :func:`take` walks a ranking into the demonstrations: it skips excluded entries and entries
of a label already at its quota, and stops at ``k``.

**The tie rule.** Wherever a method orders by a score (kNN's cosine, BM25, the candidates MMR and DPP
start from), equal scores go by pool index, lowest first: :func:`order_by_score_then_index` and
:func:`top_by_score_then_index`. Label quotas never change it: with quotas a method fetches each
label's best ``cap`` entries by the same rule, which holds exactly what walking the full ranking
with quotas would take (entries of a label beyond its first ``cap`` are never taken), so memory
stays ``queries x (k + labels)`` instead of ``queries x pool``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from counterpoint.selection.pool import DemoPool

__all__ = [
    "Candidates",
    "Ranking",
    "SelectionRequest",
    "label_candidates",
    "order_by_score_then_index",
    "query_embeddings",
    "take",
    "top_by_score_then_index",
]

Ranking = list[tuple[int, float]]  # (pool index, score), most preferred first


@dataclass
class SelectionRequest:
    """The arguments of one ``select`` call, validated, as a method's ``rank`` gets them.

    Attributes:
        k: demonstrations per query.
        method: the method's name.
        query_keys: the query fields joined into its text.
        queries: the queries, as dicts.
        texts: each query's text (its ``query_keys`` joined by newlines).
        exclude: per query, the pool indices it must not get back (sorted).
        label_ids: ``(N,)`` label id of each pool example when balancing labels, else ``None``.
        n_labels: number of distinct labels (0 without quotas).
        cap: at most this many demonstrations per label, or ``None``.
        kwargs: the method's keyword arguments and the common ones, defaults filled in.
        seed: seeds random methods.
        max_tokens: the token budget (None: none), for methods that search within it
            (``MethodSpec.budget_aware``).
        count_tokens: ``count_tokens(demos, query) -> int``, the budget's count of a prompt (the select
            call's ``render`` and ``tokenizer``); set with ``max_tokens``.
    """

    k: int
    method: str
    query_keys: tuple[str, ...]
    queries: list[dict[str, Any]]
    texts: list[str]
    exclude: list[list[int]]
    label_ids: np.ndarray | None
    n_labels: int
    cap: int | None
    kwargs: dict[str, Any]
    seed: int = 0
    max_tokens: int | None = None
    count_tokens: Callable[[list[dict[str, Any]], dict[str, Any]], int] | None = None

    def label_members(self) -> list[np.ndarray]:
        """Pool indices of each label (ascending), label ids in order; needs quotas."""
        assert self.label_ids is not None
        return [np.flatnonzero(self.label_ids == lab) for lab in range(self.n_labels)]


def take(ranking: Any, req: SelectionRequest, qi: int, *, strict: bool = True) -> Ranking:
    """Walk a ranking: skip excluded entries and entries of labels already at quota, stop at k.

    Raises:
        RuntimeError: with ``strict``, when the ranking runs out before ``k`` (only an approximate
            faiss index that returns too few neighbours can cause it: ``select`` checked the room).
    """
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
            "with an approximate faiss index raise its target_recall (or ef_search / nprobe), or use "
            "exact search"
        )
    return out


# ------------------------------------------------------------------------------------------ tie rule


def order_by_score_then_index(scores: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score (decreasing), equal scores by index (increasing).

    Args:
        scores, idx: ``(Q, C)`` candidates' scores and pool indices.

    Returns:
        ``(scores, idx)`` ``(Q, C)``, rows reordered.
    """
    idx, pos = idx.sort(dim=1, stable=True)
    scores = scores.gather(1, pos)
    scores, pos = scores.sort(dim=1, descending=True, stable=True)
    return scores, idx.gather(1, pos)


def rankings_from_candidates(scores: torch.Tensor, idx: torch.Tensor) -> list[Ranking]:
    """Per row, the candidates by the tie rule, without padding (``-inf`` score or index ``-1``)."""
    scores, idx = order_by_score_then_index(scores, idx)
    return [
        [(i, v) for i, v in zip(ri, rs, strict=True) if v != float("-inf") and i >= 0]
        for ri, rs in zip(idx.tolist(), scores.tolist(), strict=True)
    ]


def top_by_score_then_index(row: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` best positions of a 1-D score array by the tie rule, in that order.

    Linear time (a partition, then a sort of the ``m`` kept); exact at the boundary: among entries
    equal to the ``m``-th score, the lowest positions are kept.
    """
    n = row.shape[0]
    m = min(m, n)
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    if m == n:
        cand = np.arange(n)
    else:
        kth = row[np.argpartition(-row, m - 1)[m - 1]]  # the m-th largest score
        above = np.flatnonzero(row > kth)
        cand = np.concatenate([above, np.flatnonzero(row == kth)[: m - len(above)]])
    return cand[np.lexsort((cand, -row[cand]))]


# ------------------------------------------------------------------------------------------ embeddings


def query_embeddings(pool: DemoPool, req: SelectionRequest) -> torch.Tensor:
    """``(Q, D)`` unit query embeddings: ``query_embeddings=`` when given, else the pool's embedder."""
    given = req.kwargs.get("query_embeddings")
    if given is not None:
        emb = pool.check_query_embeddings(given, argument="query_embeddings")
        if emb.shape[0] != len(req.queries):
            raise ValueError(
                f"query_embeddings has {emb.shape[0]} rows for {len(req.queries)} queries; pass one row a query"
            )
        return emb
    return pool.embed_queries(req.texts, batch_size=req.kwargs["batch_size"])


def label_candidates(
    pool: DemoPool, emb: torch.Tensor, req: SelectionRequest, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest pool entries by cosine similarity, ordered by the tie rule.

    Without quotas the top ``n``; with quotas the top ``max(cap, ceil(n / labels))`` of every label
    (exact search within the label), so each label can fill its quota. Excluded entries are left out.

    Returns:
        ``(scores, indices)`` ``(Q, C)``; ``-inf`` / ``-1`` where fewer were found.
    """
    if req.label_ids is None:
        scores, idx = pool.search(emb, n, exclude=req.exclude)
    else:
        per = max(req.cap, math.ceil(n / req.n_labels))
        parts = [pool.search(emb, per, exclude=req.exclude, subset=m) for m in req.label_members()]
        scores, idx = torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
    return order_by_score_then_index(scores, idx)


@dataclass
class Candidates:
    """Each query's candidates for a greedy method (MMR, DPP), padded to ``C``.

    Attributes:
        scores: ``(Q, C)`` cosine similarity to the query, ``-inf`` for padding.
        idx: ``(Q, C)`` pool indices, ``0`` for padding.
        valid: ``(Q, C)`` which entries are real candidates.
        emb: ``(Q, C, D)`` their unit embeddings.
        labels: ``(Q, C)`` label ids with quotas, else ``None``.
    """

    scores: torch.Tensor
    idx: torch.Tensor
    valid: torch.Tensor
    emb: torch.Tensor
    labels: torch.Tensor | None

    @classmethod
    def fetch(cls, pool: DemoPool, req: SelectionRequest, n: int) -> Candidates:
        """The ``n`` nearest (per label with quotas) of every query, ordered by the tie rule."""
        scores, idx = label_candidates(pool, query_embeddings(pool, req), req, min(n, len(pool)))
        valid = (scores > float("-inf")) & (idx >= 0)
        safe = idx.clamp(min=0)
        labels = None if req.label_ids is None else torch.from_numpy(req.label_ids)[safe]
        return cls(scores, safe, valid, pool.embeddings[safe], labels)

    def rankings(self, picks: torch.Tensor) -> list[Ranking]:
        """``(Q, k)`` candidate positions in pick order (``-1``: none) as rankings."""
        return [
            [(int(self.idx[q, p]), float(self.scores[q, p])) for p in row.tolist() if p >= 0]
            for q, row in enumerate(picks)
        ]


def apply_label_cap(
    counts: torch.Tensor,
    cand_labels: torch.Tensor,
    rows: torch.Tensor,
    best: torch.Tensor,
    allowed: torch.Tensor,
    cap: int,
) -> None:
    """Count the new picks' labels; forbid every candidate of a label that has reached its quota.

    Args:
        counts: ``(Q, labels)`` picks so far per label, updated in place.
        cand_labels: ``(Q, C)`` each candidate's label.
        rows, best: the queries that picked, and the candidate each picked.
        allowed: ``(Q, C)`` which candidates may still be picked, updated in place.
        cap: the quota.
    """
    lab = cand_labels[rows, best]
    counts[rows, lab] += 1
    full = counts.gather(1, cand_labels.clamp(min=0)) >= cap  # (Q, C)
    allowed &= ~full
