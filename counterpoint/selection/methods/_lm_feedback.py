"""What the LM-scored methods (``lm``, ``se2``) share: the answers a query is scored on, the target that
stands in for its unknown gold answer, and their common options.

A prompt ``P`` (demonstrations, then the query) is scored by the target model's log-probability of each of
the query's candidate answers ``a``: ``lp_a(P) = log p(a | P)`` (summed over the answer's tokens), with
:class:`~counterpoint.selection.lm_scorer.LMScorer`. The answers are the pool's labels (classification) or
the query's own list (``answers_key``, multiple choice). The gold answer is unknown at selection time; the
score of ``P`` is, by ``target``:

* ``"prediction"``: ``lp_y(P)`` with ``y`` the model's own zero-shot answer (``argmax_a lp_a(query alone)``;
  ties: the first answer): EPR's and UDR's score with the model's prediction in place of the gold label;
* ``"labels"``: ``mean_a lp_a(P)``, the score averaged over the answers (uniform over the label set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from counterpoint.errors import OptionError
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.ranking import SelectionRequest
from counterpoint.selection.spec import MethodKwarg, check_positive_int

__all__ = ["TARGETS", "answer_values", "check_common", "common_kwargs", "query_targets", "target_scores"]

TARGETS = ("prediction", "labels")


def common_kwargs(candidates: int) -> tuple[MethodKwarg, ...]:
    """The options both LM-scored methods take (``candidates`` with this method's default)."""
    return (
        MethodKwarg("candidates", candidates, "nearest pool examples the model scores (at least k)", int),
        MethodKwarg(
            "target",
            "prediction",
            "the stand-in for the unknown answer: 'prediction' (the model's zero-shot one) or 'labels' (mean of all)",
            str,
        ),
        MethodKwarg(
            "answers_key", "", "query field listing its candidate answers; empty: the pool's labels", str
        ),
    )


def check_common(options: Mapping[str, Any], k: int) -> None:
    check_positive_int(options, "candidates")
    if options["candidates"] < k:
        raise OptionError("candidates", options["candidates"], f"must be at least k={k}")
    if options["target"] not in TARGETS:
        raise OptionError("target", options["target"], f"is not one of: {', '.join(TARGETS)}")
    if not isinstance(options["answers_key"], str):
        raise OptionError("answers_key", options["answers_key"], "must be a query field name (a str)")


def answer_values(pool: DemoPool, req: SelectionRequest) -> list[list[Any]]:
    """Per query, the values its answers are scored on: ``query[answers_key]`` or the pool's labels.

    Raises:
        ValueError: no ``answers_key`` and a pool without labels, or a query whose field is no list.
    """
    key = req.kwargs["answers_key"]
    if not key:
        if pool.label_key is None:
            raise ValueError(
                f"method={req.method!r} scores each query's candidate answers: build the pool with label_key= "
                "(its labels are the answers) or pass answers_key= naming the query field that lists them"
            )
        labels = list(dict.fromkeys(pool.labels))
        return [labels] * len(req.queries)
    values = []
    for qi, query in enumerate(req.queries):
        got = query.get(key)
        if isinstance(got, str | bytes) or not isinstance(got, Sequence) or len(got) == 0:
            raise ValueError(
                f"query {qi}: answers_key={key!r} must name a field holding a non-empty list of candidate "
                f"answers; got {got!r}"
            )
        values.append(list(got))
    return values


def query_targets(scorer: Any, req: SelectionRequest, values: list[list[Any]]) -> list[list[Any]]:
    """Per query, the answers each prompt is scored on: all of them (``"labels"``) or the model's zero-shot
    prediction alone (``"prediction"``: one scoring round of the queries without demonstrations)."""
    if req.kwargs["target"] == "labels":
        return values
    zero_shot = scorer.score([([], q) for q in req.queries], values, share=[None] * len(values))
    return [[v[int(torch.argmax(s))]] for v, s in zip(values, zero_shot, strict=True)]


def target_scores(raw: Sequence[torch.Tensor]) -> list[float]:
    """Each prompt's score: the mean over the answers it was scored on (one answer: that answer's)."""
    return [float(r.double().mean()) for r in raw]
