"""DPP: greedy MAP inference for a determinantal point process (Chen et al. 2018, "Fast Greedy MAP
Inference for Determinantal Point Process") over OpenICL's / CEIL's kernel ``rel_i * sim_ij * rel_j``
on the ``candidates`` nearest examples: relevant and diverse demonstrations, batched over queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from counterpoint.errors import OptionError
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Candidates, Ranking, SelectionRequest, apply_label_cap
from counterpoint.selection.spec import MethodKwarg, MethodSpec, check_positive_int

__all__ = ["DPP_EPSILON", "SPEC", "dpp_greedy", "dpp_kernel", "rank"]

# Greedy DPP stops adding diversity once the best marginal gain (a squared distance in the kernel's
# feature space) falls below this; the remaining picks then follow relevance. Chen et al. use 1e-10.
DPP_EPSILON = 1e-10


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
            apply_label_cap(counts, cand_labels, rows[ok], best[ok], allowed, cap)
    return picks


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, its DPP picks in pick order (scores: cosine similarity to the query)."""
    c = Candidates.fetch(pool, req, req.kwargs["candidates"])
    rel = c.scores.masked_fill(~c.valid, -1.0)
    kernel = dpp_kernel(rel, c.emb, float(req.kwargs["scale"]))
    picks = dpp_greedy(kernel, req.k, valid=c.valid, rel=rel, cand_labels=c.labels, cap=req.cap)
    return c.rankings(picks)


def check(options: Mapping[str, Any], k: int) -> None:
    check_positive_int(options, "candidates")
    if options["candidates"] < k:
        raise OptionError("candidates", options["candidates"], f"must be at least k={k}")
    if not float(options["scale"]) > 0:
        raise OptionError("scale", options["scale"], "must be positive")


SPEC = MethodSpec(
    name="dpp",
    summary="determinantal point process: relevant and diverse, greedy MAP (OpenICL's kernel)",
    rank=rank,
    needs_embedder=True,
    kwargs=(
        # OpenICL's / CEIL's defaults.
        MethodKwarg("candidates", 100, "nearest candidates the DPP chooses among (at least k)", int),
        MethodKwarg("scale", 0.1, "relevance (small) against diversity (large), > 0", float),
    ),
    check=check,
    position=2,
)
