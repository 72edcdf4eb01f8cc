"""The target model as selection's judge: ``log p(answer | prompt(demonstrations, query))`` for many
(demonstrations, query) pairs at once.

The LM-scored methods (``lm``, ``se2``) ask one question many times: how likely does the model find each
candidate answer of a query after a prompt holding some demonstrations? :class:`LMScorer` renders every
prompt exactly as the pipeline will (the template's ``render_text``), tokenizes it as the pipeline does
(the prompt with the template's special tokens, each answer separately without them), and scores all pairs
through :func:`counterpoint.decoding.scoring.score_continuations`, the project's one teacher-forced scorer:

* the answers of one prompt share its forward (identical prompts run once);
* prompts that begin alike share that beginning through the KV cache: the caller names, per prompt, a
  ``share`` key (e.g. the demonstration that comes first), and the prompts of one key run their longest
  common token prefix once per batch (``prefix_lengths``). One-shot scoring of M candidates for Q queries
  runs each candidate's instruction-and-demonstration block once per batch instead of once per query.

Example:
    >>> scorer = LMScorer.from_template(model, tokenizer, template)  # doctest: +SKIP
    >>> scorer.score([([demo], query)], [["negative", "positive"]])  # doctest: +SKIP
    [tensor([-2.31, -0.12])]
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from counterpoint.errors import OptionError

__all__ = ["LMScorer", "ScorerStats", "template_answer"]

Render = Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any]], str]
Answer = Callable[[Mapping[str, Any], Any], str]


def _fields(fmt: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(fmt) if name}


def template_answer(template: Any) -> Answer:
    """How ``template`` writes a value as the answer to a query: what follows the query's prompt.

    A text template (``FewShotTemplate``: ``render_demo``, ``render_query``, ``demo_format``,
    ``query_format``) writes a demonstration as its query block followed by the answer, so the answer text
    is the query rendered as a demonstration with the value in the answer field, minus the query block
    (``" positive"`` for ``"Review: {input}\\nSentiment: {label}"``). A chat template (``ChatTemplate``:
    ``.template`` holding the formats) writes it as the assistant turn's content. The answer field is the
    one field the demonstration format has and the query format has not.

    Raises:
        ValueError: the template is neither, or its formats do not name exactly one answer field, or its
            demonstration block does not begin with its query block.
    """
    inner = getattr(template, "template", None)
    if inner is not None and hasattr(inner, "chat_assistant_format"):  # a chat template
        answer_fields = _fields(inner.chat_assistant_format) - _fields(inner.chat_user_format)
        if len(answer_fields) != 1:
            raise ValueError(
                f"chat_assistant_format={inner.chat_assistant_format!r} must name one field that "
                f"chat_user_format={inner.chat_user_format!r} does not (the answer); got {sorted(answer_fields)}"
            )
        (name,) = answer_fields
        fmt = inner.chat_assistant_format
        return lambda query, value: fmt.format_map({**query, name: value})
    if not all(hasattr(template, a) for a in ("render_demo", "render_query", "demo_format", "query_format")):
        raise ValueError(
            f"cannot tell how {type(template).__name__} writes an answer: give LMScorer(answer=...) or a "
            "FewShotTemplate / ChatTemplate"
        )
    answer_fields = _fields(template.demo_format) - _fields(template.query_format)
    if len(answer_fields) != 1:
        raise ValueError(
            f"demo_format={template.demo_format!r} must name exactly one field that query_format="
            f"{template.query_format!r} does not (the answer); got {sorted(answer_fields)}"
        )
    (name,) = answer_fields

    def answer(query: Mapping[str, Any], value: Any) -> str:
        head = template.render_query(query)
        full = template.render_demo({**query, name: value})
        if not full.startswith(head):
            raise ValueError(
                f"demo_format={template.demo_format!r} does not begin with query_format="
                f"{template.query_format!r}, so the answer cannot be read off it; give LMScorer(answer=...)"
            )
        return full[len(head) :]

    return answer


@dataclass
class ScorerStats:
    """What an :class:`LMScorer` has run so far (reset with ``stats = ScorerStats()``).

    Attributes:
        calls: :meth:`LMScorer.score` calls.
        prompts: prompts scored (each with all its answers).
        forwards: model forward passes.
        tokens: token positions those forwards computed (padding included).
    """

    calls: int = 0
    prompts: int = 0
    forwards: int = 0
    tokens: int = 0


@dataclass(eq=False)
class LMScorer:
    """Scores candidate answers after prompts built from demonstrations, batched, with shared prefixes.

    Attributes:
        model: the target causal LM (the model the prompts are for).
        tokenizer: its tokenizer.
        render: ``render(demos, query) -> str``, the prompt as the pipeline builds it (e.g.
            ``FewShotTemplate.render_text``).
        answer: ``answer(query, value) -> str``, the text a candidate answer adds after the query's prompt,
            or a format string with one ``{}`` (default ``" {}"``: a space, then the value).
        batch_size: (prompt, answer) pairs per forward.
        add_special_tokens: whether the prompt is tokenized with the tokenizer's special tokens (a chat
            template's text holds its own: ``False``).
        stats: counts of what has run (:class:`ScorerStats`).
    """

    model: Any
    tokenizer: Any
    render: Render
    answer: Answer | str = " {}"
    batch_size: int = 32
    add_special_tokens: bool = True
    stats: ScorerStats = field(default_factory=ScorerStats)

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise OptionError("model", type(self.model).__name__, "must be a loaded causal LM")
        if not callable(self.tokenizer):
            raise OptionError("tokenizer", type(self.tokenizer).__name__, "must be a tokenizer")
        if not callable(self.render):
            raise OptionError("render", type(self.render).__name__, "must be a callable render(demos, query)")
        if isinstance(self.answer, str):
            if self.answer.count("{}") != 1:
                raise OptionError("answer", self.answer, "must be a format string with one {} (e.g. ' {}')")
        elif not callable(self.answer):
            raise OptionError("answer", type(self.answer).__name__, "must be a callable or a format string")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptionError("batch_size", self.batch_size, "must be an int >= 1")
        self._answer_ids: dict[str, list[int]] = {}

    @classmethod
    def from_template(cls, model: Any, tokenizer: Any, template: Any, **fields: Any) -> LMScorer:
        """A scorer rendering with ``template`` (``FewShotTemplate`` or ``ChatTemplate``), its answers written as
        the template writes them (:func:`template_answer`) and tokenized as the pipeline tokenizes them."""
        fields.setdefault("add_special_tokens", getattr(template, "add_special_tokens", True))
        return cls(model, tokenizer, template.render_text, template_answer(template), **fields)

    # -- text and tokens ----------------------------------------------------------------------------
    def answer_text(self, query: Mapping[str, Any], value: Any) -> str:
        """The text ``value`` adds after ``query``'s prompt."""
        if isinstance(self.answer, str):
            return self.answer.format(value)
        return self.answer(query, value)

    def prompt_ids(self, demos: Sequence[Mapping[str, Any]], query: Mapping[str, Any]) -> list[int]:
        """The prompt's token ids, as the pipeline tokenizes it."""
        text = self.render(list(demos), query)
        return list(self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"])

    def _answer_tokens(self, text: str) -> list[int]:
        ids = self._answer_ids.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ValueError(f"the answer {text!r} tokenizes to no tokens; give non-empty answers")
            self._answer_ids[text] = ids
        return ids

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]],
        answers: Sequence[Sequence[Any]],
        share: Sequence[Hashable] | None = None,
    ) -> list[torch.Tensor]:
        """``log p(answer | render(demos, query))`` for every answer of every prompt.

        Args:
            prompts: ``(demos, query)`` pairs: demonstration examples (dicts, in prompt order) and the query.
            answers: per prompt, the values whose answers are scored (written by :attr:`answer`).
            share: per prompt, a key: prompts with the same key run their longest common token prefix once
                per batch (e.g. the first demonstration's pool index). None: nothing shared beyond
                identical prompts.

        Returns:
            Per prompt, ``(len(answers[i]),)`` fp32: each answer's summed token log-probability.
        """
        if len(answers) != len(prompts) or (share is not None and len(share) != len(prompts)):
            raise ValueError(
                f"score() needs one answer list{' and one share key' if share is not None else ''} per prompt: "
                f"got {len(prompts)} prompts, {len(answers)} answer lists"
                + (f", {len(share)} keys" if share is not None else "")
            )
        ids = [self.prompt_ids(demos, query) for demos, query in prompts]
        prefix = [0] * len(ids)
        if share is not None:
            groups: dict[Hashable, list[int]] = {}
            for i, key in enumerate(share):
                groups.setdefault(key, []).append(i)
            for members in groups.values():
                common = len(os.path.commonprefix([ids[i] for i in members]))  # element-wise: lists work
                for i in members:
                    prefix[i] = common
        pair_prompts, pair_conts, pair_prefix, sizes = [], [], [], []
        for i, ((_, query), values) in enumerate(zip(prompts, answers, strict=True)):
            if len(values) == 0:
                raise ValueError(f"prompt {i} has no answers to score")
            sizes.append(len(values))
            for value in values:
                pair_prompts.append(ids[i])
                pair_conts.append(self._answer_tokens(self.answer_text(query, value)))
                pair_prefix.append(prefix[i])
        if not pair_prompts:
            return []
        from counterpoint.decoding.scoring import score_continuations

        pad = getattr(self.tokenizer, "pad_token_id", None)
        counter = self.model.register_forward_hook(self._count, with_kwargs=True)
        try:
            scores = score_continuations(
                self.model,
                pair_prompts,
                pair_conts,
                None,
                batch_size=self.batch_size,
                pad_token_id=pad if pad is not None else 0,
                prefix_lengths=pair_prefix if share is not None else None,
            )
        finally:
            counter.remove()
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        return list(scores.split(sizes))

    def _count(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.stats.forwards += 1
        self.stats.tokens += int(ids.numel()) if ids is not None else 0
