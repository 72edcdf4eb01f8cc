"""MMR: maximal marginal relevance (Carbonell & Goldstein 1998), LangChain's rule.

Among the ``fetch_k`` nearest candidates, the first pick is the most similar, then each step picks
``argmax lambda * sim(q, c) - (1 - lambda) * max_s sim(c, s)`` over the picks ``s`` so far. Batched
over queries; ties go to the earlier candidate (candidates come by similarity, then pool index).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from counterpoint.errors import OptionError
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Candidates, Ranking, SelectionRequest, apply_label_cap
from counterpoint.selection.spec import MethodKwarg, MethodSpec, check_positive_int

__all__ = ["SPEC", "mmr_greedy", "rank"]


@torch.no_grad()
def mmr_greedy(
    rel: torch.Tensor,
    cand_emb: torch.Tensor,
    k: int,
    lambda_mult: float,
    *,
    valid: torch.Tensor,
    cand_labels: torch.Tensor | None = None,
    cap: int | None = None,
) -> torch.Tensor:
    """Greedy MMR over each query's candidates.

    Args:
        rel: ``(Q, F)`` similarity of each candidate to its query.
        cand_emb: ``(Q, F, D)`` candidates' unit embeddings.
        k: picks per query (``<= F``).
        lambda_mult: 1 is pure relevance, 0 pure diversity.
        valid: ``(Q, F)`` bool, which candidates may be picked (padding and excluded ones may not).
        cand_labels: ``(Q, F)`` label ids, with ``cap``: at most ``cap`` picks per label.

    Returns:
        ``(Q, k)`` candidate positions in pick order; ``-1`` where no valid candidate was left.
    """
    q, f = rel.shape
    sim = cand_emb @ cand_emb.transpose(1, 2)  # (Q, F, F)
    allowed = valid.clone()
    max_sim = torch.full((q, f), float("-inf"), dtype=rel.dtype)  # (Q, F) max sim to the picks so far
    counts = None if cand_labels is None else torch.zeros((q, int(cand_labels.max()) + 1), dtype=torch.long)
    rows = torch.arange(q)
    picks = torch.full((q, k), -1, dtype=torch.long)
    for t in range(k):
        score = rel if t == 0 else lambda_mult * rel - (1 - lambda_mult) * max_sim
        score = score.masked_fill(~allowed, float("-inf"))
        best = score.argmax(dim=1)  # (Q,) first maximum on ties: candidates come most similar first
        ok = allowed[rows, best]
        picks[:, t] = torch.where(ok, best, -1)
        allowed[rows[ok], best[ok]] = False
        max_sim = torch.maximum(max_sim, sim[rows, best])  # (Q, F)
        if counts is not None:
            apply_label_cap(counts, cand_labels, rows[ok], best[ok], allowed, cap)
    return picks


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, its MMR picks in pick order (scores: cosine similarity to the query)."""
    c = Candidates.fetch(pool, req, req.kwargs["fetch_k"])
    rel = c.scores.masked_fill(~c.valid, -1.0)
    picks = mmr_greedy(
        rel, c.emb, req.k, float(req.kwargs["lambda_mult"]), valid=c.valid, cand_labels=c.labels, cap=req.cap
    )
    return c.rankings(picks)


def check(options: Mapping[str, Any], k: int) -> None:
    check_positive_int(options, "fetch_k")
    if options["fetch_k"] < k:
        raise OptionError("fetch_k", options["fetch_k"], f"must be at least k={k}")
    if not 0.0 <= float(options["lambda_mult"]) <= 1.0:
        raise OptionError("lambda_mult", options["lambda_mult"], "must be in [0, 1]")


SPEC = MethodSpec(
    name="mmr",
    summary="maximal marginal relevance: similar to the query, unlike each other (LangChain's rule)",
    rank=rank,
    needs_embedder=True,
    kwargs=(
        # LangChain's defaults.
        MethodKwarg("fetch_k", 20, "nearest candidates MMR chooses among (at least k)", int),
        MethodKwarg("lambda_mult", 0.5, "1 is pure similarity, 0 pure diversity", float),
    ),
    check=check,
    position=1,
)
