"""LM: the ``candidates`` pool examples most similar to the query, re-ranked by how well the target model
answers the query with each one as its single demonstration.

The seeds score a candidate demonstration ``e`` for an input ``x`` with gold output ``y`` by the target
model's likelihood of ``y`` after ``e`` and ``x``: EPR (Rubin et al. 2022, "Learning to Retrieve Prompts
for In-Context Learning") by ``Prob(y | e, x)`` over the top BM25 candidates; UDR (Li et al. 2023,
"Unified Demonstration Retriever for In-Context Learning"; KaiLv69/UDR ``scorer.py``) by the per-token
cross-entropy of ``y``; LAIL (Li et al. 2023, "Large Language Model-Aware In-Context Learning for Code
Generation") by the same probability, as positive and negative labels. All three spend that score on
*training*: it labels candidates for training examples, whose ``y`` is known, and a dense retriever learns
to imitate it, so that at test time, where ``y`` is unknown, only the retriever runs. (Li and Qiu 2023,
"Finding Support Examples for In-Context Learning", use the same feedback query-independently: an
example's InfoScore is its gain in ``p(y | e, x)`` over zero-shot, summed over other labelled examples, to
pick one fixed demonstration set for every query.)

**The training-free variant here** keeps their score and drops the retriever: at selection time the model
scores each of the query's ``candidates`` (its nearest pool examples) as a one-shot demonstration, and the
candidates are ranked by that score. Only the missing ``y`` needs a stand-in (``target``; see
:mod:`~counterpoint.selection.methods._lm_feedback`): by default the model's own zero-shot answer
(``"prediction"``, EPR's ``Prob(y | e, x)`` with ``y`` predicted), or the mean over the candidate answers
(``"labels"``). Why this one: it is the seeds' own criterion applied where it is defined without training
data, at the cost of ``candidates`` scored prompts per query; a trained retriever is cheaper per query but
needs a labelled training set scored the same way first (the pool would have to be scored against itself)
and a retriever to train, which a selection call cannot assume.

Cost per query: one zero-shot scoring (``"prediction"``) and ``candidates`` one-shot prompts, all batched
across queries (:class:`~counterpoint.selection.lm_scorer.LMScorer`); a candidate's instruction and
demonstration tokens run once per batch for every query that has it among its candidates, and only the
query and its answers run per pair. Label quotas fetch each label's nearest (as kNN does) before scoring;
equal scores go by pool index (the one tie rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from counterpoint.selection.methods._lm_feedback import (
    answer_values,
    check_common,
    common_kwargs,
    query_targets,
    target_scores,
)
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
    """Per query, its candidates ordered by their one-shot LM score (then pool index)."""
    scorer = req.kwargs["scorer"]
    values = answer_values(pool, req)
    sims, idx = label_candidates(
        pool, query_embeddings(pool, req), req, min(req.kwargs["candidates"], len(pool))
    )
    valid = (sims > float("-inf")) & (idx >= 0)  # (Q, C)
    asked = query_targets(scorer, req, values)
    where = valid.nonzero().tolist()  # [(query, candidate position)]
    prompts = [([pool.records[int(idx[q, c])]], req.queries[q]) for q, c in where]
    raw = scorer.score(prompts, [asked[q] for q, _ in where], share=[int(idx[q, c]) for q, c in where])
    lm = torch.full(sims.shape, float("-inf"), dtype=torch.float64)  # (Q, C)
    for (q, c), score in zip(where, target_scores(raw), strict=True):
        lm[q, c] = score
    return rankings_from_candidates(lm, idx)


def check(options: Mapping[str, Any], k: int) -> None:
    check_common(options, k)


SPEC = MethodSpec(
    name="lm",
    summary="the nearest candidates re-ranked by the target model's score of each as a one-shot demonstration",
    rank=rank,
    needs_embedder=True,
    kwargs=common_kwargs(16),
    check=check,
    position=6,
    needs_scorer=True,
)
