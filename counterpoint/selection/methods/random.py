"""Random: ``k`` pool examples drawn uniformly without replacement, seeded (``seed=``); the usual
baseline. Scores are 0.0 and the demonstrations keep their draw order.

With label quotas the result is distributed exactly as walking a uniformly random permutation of the
pool with quotas, without building that permutation: a random permutation is the order of iid
uniform keys, and the walk only ever takes each label's ``cap`` largest keys. So per label we draw
those keys directly (the largest ``c`` of ``a`` iid uniforms: ``M_1 = U^(1/a)``,
``M_{j+1} = M_j * U^(1/(a - j))``, in logs) and give them to a uniform random ``c``-subset of the
label's allowed members, then merge the labels by key: ``queries x (k + labels)`` memory.
"""

from __future__ import annotations

import numpy as np

from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Ranking, SelectionRequest
from counterpoint.selection.spec import MethodSpec

__all__ = ["SPEC", "random_rankings", "rank"]


def random_rankings(n: int, n_queries: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``(Q, length)`` distinct random pool indices per query (a full permutation when ``length == n``)."""
    if length >= n:
        return np.stack([rng.permutation(n) for _ in range(n_queries)])
    return np.stack([rng.choice(n, size=length, replace=False) for _ in range(n_queries)])


def top_keys(allowed: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """The ``count`` largest of ``allowed`` iid uniform keys, as logs, largest first (float64)."""
    j = np.arange(count)
    steps = np.log(rng.random(count)) / (allowed - j)  # log U_j / (a - j)
    return np.cumsum(steps)


def _label_draw(
    members: np.ndarray, banned: list[int], cap: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One query, one label: ``(pool indices, log keys)`` of its ``min(cap, allowed)`` largest keys.

    Args:
        members: the label's pool indices.
        banned: those of them the query must not get.
    """
    allowed = len(members) - len(banned)
    count = min(cap, allowed)
    if count == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # A uniform random ordered subset of the allowed members: draw past the banned ones.
    draw = members[rng.choice(len(members), size=min(len(members), count + len(banned)), replace=False)]
    if banned:
        skip = set(banned)
        draw = np.array([i for i in draw.tolist() if i not in skip], dtype=np.int64)
    return draw[:count], top_keys(allowed, count, rng)


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, ``k + excluded`` random draws; with quotas each label's share, merged by key."""
    rng = np.random.default_rng(req.seed)
    if req.label_ids is None:
        extra = max((len(e) for e in req.exclude), default=0)
        draws = random_rankings(len(pool), len(req.queries), min(len(pool), req.k + extra), rng)
        return [[(int(i), 0.0) for i in row] for row in draws]
    members = req.label_members()
    rankings = []
    for banned in req.exclude:
        by_label: list[list[int]] = [[] for _ in members]
        for i in banned:
            by_label[req.label_ids[i]].append(i)
        parts = [_label_draw(m, b, req.cap, rng) for m, b in zip(members, by_label, strict=True)]
        idx = np.concatenate([p[0] for p in parts])
        keys = np.concatenate([p[1] for p in parts])
        rankings.append([(int(i), 0.0) for i in idx[np.argsort(-keys, kind="stable")]])
    return rankings


SPEC = MethodSpec(
    name="random",
    summary="uniform random draw without replacement (seeded by --seed); the baseline",
    rank=rank,
    needs_embedder=False,
    position=4,
)
