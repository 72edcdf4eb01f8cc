"""Vote-k: the graph stage of vote-k (Su et al. 2022, "Selective Annotation Makes Language Models
Better Few-Shot Learners"): one query-independent order of the pool, diverse and representative, the
same for every query (or for choosing what to annotate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from counterpoint.errors import OptionError
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Ranking, SelectionRequest, take
from counterpoint.selection.spec import MethodKwarg, MethodSpec, check_positive_int

__all__ = ["SPEC", "VoteK", "rank", "vote_k_order"]


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
        self.ranking: Ranking = []  # (order, scores) as pairs, shared by every query

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
            self.ranking.append((u, float(score[u])))
            self.picked[u] = True
            self.times += (self.neighbours == u).any(dim=1).double()


def vote_k_order(pool: DemoPool, graph_k: int = 150, rho: float = 10.0) -> VoteK:
    """The pool's :class:`VoteK` for these parameters, kept in ``pool.cache`` (its order only grows)."""
    g = min(int(graph_k), len(pool) - 1)
    key = ("vote-k", g, float(rho))
    if key not in pool.cache:
        if g < 1:
            raise ValueError("vote-k needs a pool of at least 2 examples")
        _, nbrs = pool.search(pool.embeddings, g, exclude=[[i] for i in range(len(pool))])
        pool.cache[key] = VoteK(nbrs, rho=float(rho))
    return pool.cache[key]


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """The one vote-k order, grown until every query can take ``k`` from it (past its excluded
    entries and full labels); every query gets the same shared ranking."""
    vote = vote_k_order(pool, req.kwargs["graph_k"], req.kwargs["rho"])
    for qi in range(len(req.queries)):
        need = req.k + len(req.exclude[qi])
        while True:
            vote.extend(need)
            if len(take(vote.ranking, req, qi, strict=False)) == req.k or len(vote.order) == len(pool):
                break
            need *= 2
    return [vote.ranking] * len(req.queries)


def check(options: Mapping[str, Any], k: int) -> None:
    check_positive_int(options, "graph_k")
    if not float(options["rho"]) > 1:
        raise OptionError("rho", options["rho"], "must be greater than 1")


SPEC = MethodSpec(
    name="vote-k",
    summary="vote-k: one diverse, representative order of the pool, the same for every query",
    rank=rank,
    needs_embedder=True,
    kwargs=(
        # The paper's k and rho.
        MethodKwarg("graph_k", 150, "neighbours each example votes for", int),
        MethodKwarg("rho", 10.0, "discount per already-covered vote, > 1", float),
    ),
    check=check,
    position=5,
)
