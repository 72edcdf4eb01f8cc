"""Se²: sequential demonstration selection by beam search over ordered sequences, scored by the target model
(Liu et al. 2024, "Se²: Sequential Example Selection for In-Context Learning"; microsoft/LMOps ``se2/``).

**How Se² scores and searches.** Se² builds a demonstration sequence one example at a time, each choice
conditioned on the examples already chosen. Its feedback is the LLM's: for a training input ``x`` with gold
output ``y``, a candidate ``e`` is scored in the context of the sequence ``S`` chosen so far by the prompt
``e, S, x`` (``scorer_dsr.py``: the candidate goes *in front of* the sequence, the chosen examples follow in
order, then ``x``); for classification and multiple choice, by the gold option's length-normalised loss,
L1-normalised over the options (``scorer.py``, ``choice_losses``). Those scores label training data for a
retriever that encodes ``S`` and ``x`` together. At inference (``DPR/dense_retriever_beam_score.py``) a beam
search (beam 3, 3 shots by default) grows sequences from the query outwards: each beam proposes its
retriever's best new examples, a new example is *prepended* (``next_seq = doc + seq``), a sequence's score
is the sum of its steps' scores, and the best ``beam_size`` sequences go on; the best final sequence is the
prompt.

**This method, training-free.** The same beam search, with the target model's own score in place of the
trained retriever's (the retriever was trained to imitate exactly that feedback): at every step each beam
``S`` (in prompt order) and each of the query's ``candidates`` nearest pool examples ``e`` not yet in it give
the prompt ``e, S, query``, scored as in :mod:`~counterpoint.selection.methods._lm_feedback` (the gold answer
is unknown: the model's zero-shot answer or the mean over the answers, ``target``; log-probabilities rather
than Se²'s normalised loss, whose mean over the options is constant). A sequence's score is the sum of its
steps' scores (Se²'s rule); extensions are ranked by that sum, then by the new example's pool index, then by
the parent beam's rank (the one tie rule), and the best ``beam_size`` are kept. Sequence length is ``k``.
Differences from Se²: every beam is scored against the same candidates (the query's nearest by embedding,
where Se² re-retrieves per beam), and each candidate is scored, not just the retriever's top few.

**Guarantees.** Candidates exclude the query itself; with label quotas a beam never takes a label past its
cap; with a token budget (``max_tokens``) an extension whose prompt does not fit is not considered, and a
sequence that cannot grow stops short of ``k`` (longer sequences beat shorter ones, then by score). The
result keeps Se²'s order: the first example chosen sits next to the query and each later one in front
(``order="most_similar_last"``; the scores, the sequence's running sum after each choice, fall along the
choices), and dropping the last choices first (the budget) leaves a sequence the search scored.

**Cost.** Step ``t`` scores ``beams x (candidates - t + 1)`` prompts per query (one beam at ``t = 1``), each
as long as ``t - 1`` demonstrations plus the query; every step is one scoring round for all queries and beams
at once, batched, and the prompts whose first demonstration is the same candidate run its tokens once per
batch (the KV cache). ``target="prediction"`` adds one zero-shot round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from counterpoint.selection.methods._lm_feedback import (
    answer_values,
    check_common,
    common_kwargs,
    query_targets,
    target_scores,
)
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import Ranking, SelectionRequest, label_candidates, query_embeddings
from counterpoint.selection.spec import MethodKwarg, MethodSpec, check_positive_int

__all__ = ["SPEC", "Beam", "rank"]


@dataclass(frozen=True)
class Beam:
    """One sequence of the search.

    Attributes:
        picks: pool indices in the order they were chosen (the first sits next to the query).
        sums: the sequence's score after each choice (running sum of the step scores).
    """

    picks: tuple[int, ...] = ()
    sums: tuple[float, ...] = ()

    @property
    def score(self) -> float:
        return self.sums[-1] if self.sums else 0.0

    def prompt_order(self) -> list[int]:
        """The demonstrations as the prompt holds them: the latest choice first, the first one last."""
        return list(reversed(self.picks))


def rank(pool: DemoPool, req: SelectionRequest) -> list[Ranking]:
    """Per query, the best sequence's choices in the order they were made, with the running score."""
    scorer = req.kwargs["scorer"]
    width = req.kwargs["beam_size"]
    values = answer_values(pool, req)
    sims, idx = label_candidates(
        pool, query_embeddings(pool, req), req, min(req.kwargs["candidates"], len(pool))
    )
    candidates = [
        [i for i, s in zip(row_i, row_s, strict=True) if i >= 0 and s != float("-inf")]
        for row_i, row_s in zip(idx.tolist(), sims.tolist(), strict=True)
    ]
    asked = query_targets(scorer, req, values)
    labels = req.label_ids

    beams: list[list[Beam]] = [[Beam()] for _ in req.queries]  # live beams per query
    stopped: list[list[Beam]] = [[] for _ in req.queries]  # beams that could not grow
    for _ in range(req.k):
        where: list[tuple[int, int, int]] = []  # (query, parent beam, candidate)
        prompts = []
        for q, live in enumerate(beams):
            for b, beam in enumerate(live):
                counts: dict[int, int] = {}
                if labels is not None:
                    for i in beam.picks:
                        counts[int(labels[i])] = counts.get(int(labels[i]), 0) + 1
                for i in candidates[q]:
                    if i in beam.picks or (labels is not None and counts.get(int(labels[i]), 0) >= req.cap):
                        continue
                    demos = [pool.records[j] for j in [i, *beam.prompt_order()]]
                    if (
                        req.max_tokens is not None
                        and req.count_tokens(demos, req.queries[q]) > req.max_tokens
                    ):
                        continue
                    where.append((q, b, i))
                    prompts.append((demos, req.queries[q]))
        if not where:
            break
        step = target_scores(
            scorer.score(prompts, [asked[q] for q, _, _ in where], share=[i for _, _, i in where])
        )
        grown: list[list[tuple[float, int, int]]] = [[] for _ in req.queries]
        for (q, b, i), s in zip(where, step, strict=True):
            grown[q].append((beams[q][b].score + s, i, b))
        for q, options in enumerate(grown):
            parents = {b for _, _, b in options}
            stopped[q] += [beam for b, beam in enumerate(beams[q]) if b not in parents]
            best = sorted(options, key=lambda o: (-o[0], o[1], o[2]))[:width]
            beams[q] = [Beam((*beams[q][b].picks, i), (*beams[q][b].sums, total)) for total, i, b in best]
    rankings = []
    for q in range(len(req.queries)):
        final = beams[q] + stopped[q]
        best = min(final, key=lambda beam: (-len(beam.picks), -beam.score, beam.picks))
        rankings.append(list(zip(best.picks, best.sums, strict=True)))
    return rankings


def check(options: Mapping[str, Any], k: int) -> None:
    check_common(options, k)
    check_positive_int(options, "beam_size")


SPEC = MethodSpec(
    name="se2",
    summary="beam search over ordered demonstration sequences, each extension scored by the target model (Se2)",
    rank=rank,
    needs_embedder=True,
    kwargs=(
        *common_kwargs(8),
        MethodKwarg("beam_size", 3, "sequences kept at each step (Se2's default: 3)", int),
    ),
    check=check,
    position=7,
    needs_scorer=True,
    budget_aware=True,
)
