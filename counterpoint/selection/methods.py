"""The selection algorithms, each for a whole batch of queries at once.

Every function here returns, per query, a *ranking*: pool indices in the method's order of preference
with a score each. :func:`counterpoint.selection.select` turns rankings into demonstrations (skipping
excluded entries, applying label quotas, the token budget and the ordering).

* :func:`mmr_greedy`: maximal marginal relevance (Carbonell & Goldstein 1998), LangChain's rule:
  the first pick is the most similar candidate, then ``argmax lambda * sim(q, c) - (1 - lambda) *
  max_s sim(c, s)``.
* :func:`dpp_greedy`: greedy MAP inference for a DPP (Chen et al. 2018, "Fast Greedy MAP Inference
  for Determinantal Point Process") over OpenICL's / CEIL's kernel ``rel_i * sim_ij * rel_j``.
* :class:`VoteK`: the graph stage of vote-k (Su et al. 2022, "Selective Annotation Makes Language
  Models Better Few-Shot Learners"): a query-independent, diverse and representative order.
* :func:`bm25_rankings` (``bm25s``) and :func:`random_rankings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "VoteK",
    "bm25_full_scores",
    "bm25_rankings",
    "dpp_greedy",
    "dpp_kernel",
    "mmr_greedy",
    "random_rankings",
]

# Greedy DPP stops adding diversity once the best marginal gain (a squared distance in the kernel's
# feature space) falls below this; the remaining picks then follow relevance. Chen et al. use 1e-10.
DPP_EPSILON = 1e-10


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
            _apply_cap(counts, cand_labels, rows[ok], best[ok], allowed, cap)
    return picks


def _apply_cap(counts, cand_labels, rows, best, allowed, cap) -> None:
    # Count the new picks' labels; forbid every candidate of a label that has reached its quota.
    lab = cand_labels[rows, best]
    counts[rows, lab] += 1
    full = counts.gather(1, cand_labels.clamp(min=0)) >= cap  # (Q, F)
    allowed &= ~full


def dpp_kernel(rel: torch.Tensor, cand_emb: torch.Tensor, scale: float) -> torch.Tensor:
    """OpenICL's DPP kernel ``L = diag(r) S diag(r)`` with ``S = (E E^T + 1) / 2`` and
    ``r = exp(((rel + 1) / 2 - max) / (2 * scale))``, in float64.

    Args:
        rel: ``(Q, F)`` candidate-query similarities (``-inf`` for padding).
        cand_emb: ``(Q, F, D)`` unit embeddings.
        scale: trades relevance (small) against diversity (large); OpenICL and CEIL use 0.1.

    Returns:
        ``(Q, F, F)`` float64 kernel.
    """
    rel = rel.double()
    r = (rel.clamp(min=-1.0) + 1) / 2
    r = torch.exp((r - r.max(dim=1, keepdim=True).values) / (2 * scale))  # (Q, F)
    e = cand_emb.double()
    s = (e @ e.transpose(1, 2) + 1) / 2  # (Q, F, F)
    return r[:, :, None] * s * r[:, None, :]


@torch.no_grad()
def dpp_greedy(
    kernel: torch.Tensor,
    k: int,
    *,
    valid: torch.Tensor,
    rel: torch.Tensor,
    cand_labels: torch.Tensor | None = None,
    cap: int | None = None,
) -> torch.Tensor:
    """Batched greedy MAP for a DPP (Chen et al. 2018's incremental Cholesky).

    Each step adds the candidate that most increases ``log det L_S``; its gain is ``d_j^2``, kept up
    to date with one row of the Cholesky factor per step. When every gain is below
    :data:`DPP_EPSILON` the remaining picks follow ``rel``.

    Args:
        kernel: ``(Q, F, F)`` positive semi-definite kernel.
        k: picks per query.
        valid: ``(Q, F)`` which candidates may be picked.
        rel: ``(Q, F)`` relevance for the tie-break above.
        cand_labels, cap: at most ``cap`` picks per label.

    Returns:
        ``(Q, k)`` candidate positions in pick order, ``-1`` where none was left.
    """
    q, f, _ = kernel.shape
    rows = torch.arange(q)
    allowed = valid.clone()
    di2 = torch.diagonal(kernel, dim1=1, dim2=2).clone()  # (Q, F) marginal gains
    cis = torch.zeros((q, k, f), dtype=kernel.dtype)  # (Q, k, F) Cholesky rows so far
    counts = None if cand_labels is None else torch.zeros((q, int(cand_labels.max()) + 1), dtype=torch.long)
    picks = torch.full((q, k), -1, dtype=torch.long)
    fallback = torch.zeros(q, dtype=torch.bool)  # queries whose gains ran out: follow relevance
    for t in range(k):
        gains = di2.masked_fill(~allowed, float("-inf"))
        best = gains.argmax(dim=1)
        fallback |= gains[rows, best] <= DPP_EPSILON
        by_rel = rel.double().masked_fill(~allowed, float("-inf")).argmax(dim=1)
        best = torch.where(fallback, by_rel, best)
        ok = allowed[rows, best]
        picks[:, t] = torch.where(ok, best, -1)
        # Next Cholesky row: e_j = (L[best, j] - <c_best, c_j>) / d_best.
        c_best = cis[rows, :t, best] if t else torch.zeros((q, 0), dtype=kernel.dtype)  # (Q, t)
        d_best = di2[rows, best].clamp(min=DPP_EPSILON).sqrt()  # (Q,)
        e = (kernel[rows, best] - torch.einsum("qt,qtf->qf", c_best, cis[:, :t])) / d_best[:, None]
        cis[:, t] = e
        di2 = di2 - e.square()
        allowed[rows[ok], best[ok]] = False
        if counts is not None:
            _apply_cap(counts, cand_labels, rows[ok], best[ok], allowed, cap)
    return picks


class VoteK:
    """The vote-k order of a pool (Su et al. 2022, graph stage), extended on demand.

    Each example votes for its ``graph_k`` nearest neighbours. An unpicked example ``u`` scores
    ``sum over its voters v that are not picked of rho ** -(number of picked examples v voted for)``;
    the highest score is picked next (ties: lowest index). The order is query-independent: the same
    diverse, representative subset for every query (or for annotation).

    Args:
        neighbours: ``(N, g)`` each example's nearest neighbours (not itself), from the pool's search
            (``-1`` for a missing one).
        rho: discount per already-covered vote (the paper's 10).
    """

    def __init__(self, neighbours: torch.Tensor, rho: float = 10.0) -> None:
        n, g = neighbours.shape
        self.neighbours = neighbours
        self.rho = float(rho)
        # One entry per vote: who votes (voter_ids) for whom (voters_of). An approximate index may
        # leave a neighbour missing (-1): that vote is not cast.
        cast = neighbours.reshape(-1) >= 0
        self.voters_of = neighbours.reshape(-1)[cast]  # (votes,)
        self.voter_ids = torch.arange(n).repeat_interleave(g)[cast]  # (votes,)
        self.times = torch.zeros(n, dtype=torch.float64)  # per voter: picked examples it voted for
        self.picked = torch.zeros(n, dtype=torch.bool)
        self.order: list[int] = []
        self.scores: list[float] = []

    def extend(self, length: int) -> None:
        """Grow :attr:`order` to ``min(length, N)`` entries."""
        n = self.picked.numel()
        while len(self.order) < min(length, n):
            weight = torch.where(self.picked, 0.0, self.rho ** (-self.times))  # (N,) per voter
            score = torch.zeros(n, dtype=torch.float64).index_add_(
                0, self.voters_of, weight[self.voter_ids]
            )  # (N,) per candidate
            score[self.picked] = float("-inf")
            u = int(score.argmax())
            self.order.append(u)
            self.scores.append(float(score[u]))
            self.picked[u] = True
            self.times += (self.neighbours == u).any(dim=1).double()


def bm25_rankings(
    retriever: Any,
    queries: Sequence[str],
    k: int,
    *,
    weight_mask: np.ndarray | None = None,
    stopwords: str | list[str] | None = "en",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k pool entries by BM25 for a batch of queries (``bm25s``; all-zero rows where nothing matches).

    Returns:
        ``(indices, scores)``, both ``(Q, k)``.
    """
    import bm25s

    tokens = bm25s.tokenize(list(queries), stopwords=stopwords, return_ids=False, show_progress=False)
    docs, scores = retriever.retrieve(tokens, k=k, show_progress=False, weight_mask=weight_mask, n_threads=1)
    return np.asarray(docs, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def bm25_full_scores(retriever: Any, queries: Sequence[str], *, stopwords: str | list[str] | None = "en"):
    """BM25 score of every pool entry for each query, one query at a time: yields ``(N,)`` arrays."""
    import bm25s

    tokens = bm25s.tokenize(list(queries), stopwords=stopwords, return_ids=False, show_progress=False)
    vocab = retriever.vocab_dict
    for query in tokens:
        known = [t for t in query if t in vocab]  # words the pool never uses score 0 everywhere
        if known:
            yield np.asarray(retriever.get_scores(known), dtype=np.float32)
        else:
            yield np.zeros(retriever.scores["num_docs"], dtype=np.float32)


def random_rankings(n: int, n_queries: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(Q, length)`` distinct random pool indices per query (a full permutation when ``length == n``)."""
    if length >= n:
        return np.stack([rng.permutation(n) for _ in range(n_queries)])
    return np.stack([rng.choice(n, size=length, replace=False) for _ in range(n_queries)])
