"""kNN: the ``k`` pool examples most similar to the query by cosine similarity (Liu et al. 2022,
"What Makes Good In-Context Examples for GPT-3?"; LangChain's ``SemanticSimilarityExampleSelector``).

Equal similarities go by pool index, lowest first. With label quotas each label's best ``cap`` are
searched (exactly, within the label), which is what walking the full ranking would take.
"""

from __future__ import annotations

from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import (
    Ranking,
    SelectionRequest,
    label_candidates,
    query_embeddings,
    rankings_from_candidates,
)
from counterpoint.selection.spec import MethodSpec

__all__ = ["SPEC", "rank"]


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, its ``k`` nearest (or each label's ``cap`` nearest) by the tie rule."""
    emb = query_embeddings(pool, req)
    return rankings_from_candidates(*label_candidates(pool, emb, req, req.cap or req.k))


SPEC = MethodSpec(
    name="knn",
    summary="the k most similar pool examples (cosine similarity of embeddings)",
    rank=rank,
    needs_embedder=True,
    position=0,
)
