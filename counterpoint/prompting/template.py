"""Few-shot prompt templates: plain text, chat turns, contrastive demonstrations, amateur variants.

A template turns selected demonstrations and a query into the prompt a model reads. Selection's token
budget calls the same function (``select(..., render=template.render_text, tokenizer=tok)``), so the
budget and the prompt agree on what fits.

Demonstrations may be given either as selection results (``{"index", "score", "example"}``: the
``example`` is rendered) or as plain example dicts. A query is a dict or a string (a string stands for
``{query_key: string}``).

Example:
    >>> t = FewShotTemplate(instruction="Classify the sentiment.")
    >>> print(t.render_text([{"input": "great film", "output": "positive"}], {"input": "dull"}))
    Classify the sentiment.
    <BLANKLINE>
    Input: great film
    Output: positive
    <BLANKLINE>
    Input: dull
    Output:
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from counterpoint.decoding.input_contrast import AMATEUR_VARIANTS, OPPOSITE_INSTRUCTION, AmateurVariant
from counterpoint.errors import OptionError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "AMATEUR_VARIANTS",
    "ChatTemplate",
    "FewShotTemplate",
    "RenderedPrompt",
    "as_example",
    "count_tokens",
]

_POLARITIES = {"positive": True, "negative": False, True: True, False: False}


def _fields(fmt: str) -> list[str]:
    """Names of the ``{field}`` placeholders in a ``str.format`` string."""
    return [name for _, name, _, _ in string.Formatter().parse(fmt) if name]


def as_example(demo: Mapping[str, Any]) -> Mapping[str, Any]:
    """The example inside a selection result ``{"index", "score", "example"}``, or the dict itself."""
    inner = demo.get("example")
    return inner if isinstance(inner, Mapping) and "index" in demo else demo


def _fill(fmt: str, record: Mapping[str, Any], what: str, argument: str) -> str:
    try:
        return fmt.format_map(record)
    except KeyError as err:
        raise KeyError(
            f"{argument}={fmt!r} needs field {err.args[0]!r} but the {what} has keys {sorted(record)}"
        ) from None


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt and, when a tokenizer was given, its length in tokens."""

    text: str
    num_tokens: int | None = None  # None when rendered without a tokenizer


@dataclass(frozen=True)
class FewShotTemplate:
    """How an instruction, demonstrations and a query are laid out as one prompt. Validated on creation.

    The prompt is the non-empty blocks ``[instruction, demo_1, ..., demo_k, query]`` joined by
    ``separator``. A record's ``context`` (when ``context_key`` is set and the record has one) is
    written with ``context_format`` just before the record's own block.
    """

    instruction: str = ""  # first block; empty leaves it out
    demo_format: str = "Input: {input}\nOutput: {output}"  # one demonstration, fields from its example
    query_format: str = "Input: {input}\nOutput:"  # the query; the model continues after it
    separator: str = "\n\n"  # between blocks
    query_key: str = "input"  # the field a string query stands for
    context_key: str | None = "context"  # field holding a passage; None: no context handling
    context_format: str = "Context: {context}\n"  # written before a record that has context
    # Contrastive demonstrations (Gao and Das 2024): with ``contrastive=True`` every demonstration
    # must carry ``polarity_key`` ("positive"/"negative" or True/False), and its block is prefixed
    # with the matching marker line.
    contrastive: bool = False
    polarity_key: str = "polarity"
    positive_marker: str = "Positive example:"
    negative_marker: str = "Negative example:"
    # The amateur's instruction for input-contrast's "noisy-instruction" variant (Kim et al. 2024,
    # Instructive Decoding: an "opposite" instruction works best in their study; their text).
    noisy_instruction: str = OPPOSITE_INSTRUCTION
    # Chat rendering: how one demonstration splits into a user turn and an assistant turn.
    chat_user_format: str = "{input}"
    chat_assistant_format: str = "{output}"

    # Text prompts are tokenized with the tokenizer's special tokens (BOS and the like).
    add_special_tokens: bool = field(default=True, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("demo_format", "query_format", "chat_user_format", "chat_assistant_format"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _fields(value):
                raise OptionError(
                    name,
                    value,
                    "must be a str.format string with at least one {field}, e.g. 'Input: {input}'",
                )
        if self.context_key is not None and self.context_key not in _fields(self.context_format):
            raise ValueError(
                f"context_format={self.context_format!r} must contain {{{self.context_key}}} "
                f"(context_key={self.context_key!r}); set context_key=None to ignore contexts"
            )
        if not isinstance(self.separator, str):
            raise ValueError(f"separator={self.separator!r} must be a string")

    # -- records ---------------------------------------------------------------------------------
    def _query(self, query: Mapping[str, Any] | str) -> Mapping[str, Any]:
        if isinstance(query, str):
            return {self.query_key: query}
        if not isinstance(query, Mapping):
            raise TypeError(f"query={query!r} must be a dict or a string")
        return query

    def _context(self, record: Mapping[str, Any]) -> str:
        if self.context_key is None or record.get(self.context_key) in (None, ""):
            return ""
        return _fill(self.context_format, record, "record", "context_format")

    def _marker(self, example: Mapping[str, Any]) -> str:
        if not self.contrastive:
            return ""
        polarity = example.get(self.polarity_key, None)
        if polarity not in _POLARITIES:
            raise ValueError(
                f"contrastive=True needs every demonstration's {self.polarity_key!r} to be 'positive', "
                f"'negative', True or False; got {polarity!r} in {dict(example)}"
            )
        return (self.positive_marker if _POLARITIES[polarity] else self.negative_marker) + "\n"

    def render_demo(self, demo: Mapping[str, Any]) -> str:
        """One demonstration's block (marker, context, ``demo_format``)."""
        example = as_example(demo)
        return (
            self._marker(example)
            + self._context(example)
            + _fill(self.demo_format, example, "demonstration", "demo_format")
        )

    def render_query(self, query: Mapping[str, Any] | str, *, with_context: bool = True) -> str:
        """The query's block (context unless ``with_context=False``, then ``query_format``)."""
        record = self._query(query)
        context = self._context(record) if with_context else ""
        return context + _fill(self.query_format, record, "query", "query_format")

    # -- text prompts ----------------------------------------------------------------------------
    def render_text(self, demos: Sequence[Mapping[str, Any]], query: Mapping[str, Any] | str) -> str:
        """The prompt for ``query`` after ``demos``: the ``render`` callable selection expects."""
        return self._join(self.instruction, demos, self.render_query(query))

    def _join(self, instruction: str, demos: Sequence[Mapping[str, Any]], query_block: str) -> str:
        blocks = [instruction] if instruction else []
        blocks += [self.render_demo(d) for d in demos]
        blocks.append(query_block)
        return self.separator.join(blocks)

    def render(
        self,
        demos: Sequence[Mapping[str, Any]],
        query: Mapping[str, Any] | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> RenderedPrompt:
        """The prompt text and, with ``tokenizer``, its token count as the pipeline will tokenize it."""
        text = self.render_text(demos, query)
        return RenderedPrompt(text, count_tokens(text, tokenizer, self.add_special_tokens))

    def amateur_text(
        self,
        demos: Sequence[Mapping[str, Any]],
        query: Mapping[str, Any] | str,
        variant: AmateurVariant,
    ) -> str:
        """The weakened prompt input-contrast decoding gives its amateur view.

        Args:
            demos: the demonstrations of the full prompt.
            query: the query of the full prompt.
            variant: ``"no-demos"`` drops the demonstrations; ``"no-context"`` drops the query's
                context (context-aware decoding, Shi et al. 2023); ``"noisy-instruction"`` replaces
                the instruction with ``noisy_instruction``.
        """
        if variant == "no-demos":
            return self._join(self.instruction, [], self.render_query(query))
        if variant == "no-context":
            record = self._query(query)
            if self.context_key is None or record.get(self.context_key) in (None, ""):
                raise ValueError(
                    f"variant='no-context' needs the query to have a non-empty {self.context_key!r} "
                    f"field (context_key); the query has keys {sorted(record)}"
                )
            return self._join(self.instruction, demos, self.render_query(record, with_context=False))
        if variant == "noisy-instruction":
            return self._join(self.noisy_instruction, demos, self.render_query(query))
        raise ValueError(f"variant={variant!r} is not an amateur variant; use one of {AMATEUR_VARIANTS}")

    # -- chat prompts ----------------------------------------------------------------------------
    def to_messages(
        self,
        demos: Sequence[Mapping[str, Any]],
        query: Mapping[str, Any] | str,
        system_prompt: str | None = None,
        *,
        with_context: bool = True,
    ) -> list[dict[str, str]]:
        """Chat turns: an optional system prompt, a user/assistant pair per demonstration, the query.

        The system prompt is ``system_prompt`` when given, else ``instruction`` when not empty. A
        demonstration's user turn is its context and ``chat_user_format``; its assistant turn is its
        contrastive marker (if any) and ``chat_assistant_format``. The query's user turn is its
        context and ``chat_user_format``.
        """
        system = system_prompt if system_prompt is not None else self.instruction
        messages = [{"role": "system", "content": system}] if system else []
        for demo in demos:
            example = as_example(demo)
            user = self._context(example) + _fill(
                self.chat_user_format, example, "demonstration", "chat_user_format"
            )
            assistant = self._marker(example) + _fill(
                self.chat_assistant_format, example, "demonstration", "chat_assistant_format"
            )
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        record = self._query(query)
        context = self._context(record) if with_context else ""
        messages.append(
            {
                "role": "user",
                "content": context + _fill(self.chat_user_format, record, "query", "chat_user_format"),
            }
        )
        return messages

    def chat(self, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None) -> ChatTemplate:
        """This template rendered through ``tokenizer``'s chat template."""
        return ChatTemplate(self, tokenizer, system_prompt)


def count_tokens(
    text: str, tokenizer: PreTrainedTokenizerBase | None, add_special_tokens: bool = True
) -> int | None:
    """Token count of ``text`` as the pipeline tokenizes it; ``None`` without a tokenizer."""
    if tokenizer is None:
        return None
    return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


class ChatTemplate:
    """A :class:`FewShotTemplate` rendered through ``tokenizer.apply_chat_template``.

    It has the same ``render_text(demos, query)``, ``render`` and ``amateur_text`` as the plain
    template, so selection and the pipeline use either. The text already holds the chat template's
    special tokens, so it is tokenized with ``add_special_tokens=False``.

    Args:
        template: the fields (formats, markers, instruction) to render.
        tokenizer: a tokenizer with a chat template.
        system_prompt: the system turn; ``None`` uses ``template.instruction`` (and, when that is
            empty too, whatever the tokenizer's chat template does without one: SmolLM2's adds its
            own default system prompt).
    """

    add_special_tokens = False

    def __init__(
        self,
        template: FewShotTemplate,
        tokenizer: PreTrainedTokenizerBase,
        system_prompt: str | None = None,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) has no "
                "chat_template; render with the plain FewShotTemplate instead"
            )
        self.template = template
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    def __repr__(self) -> str:
        return f"ChatTemplate({self.template!r}, system_prompt={self.system_prompt!r})"

    def _apply(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render_text(self, demos: Sequence[Mapping[str, Any]], query: Mapping[str, Any] | str) -> str:
        """The chat prompt, ending with the assistant turn's opening (the generation prompt)."""
        return self._apply(self.template.to_messages(demos, query, self.system_prompt))

    def render(
        self,
        demos: Sequence[Mapping[str, Any]],
        query: Mapping[str, Any] | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> RenderedPrompt:
        """The chat prompt and its token count (with ``tokenizer``, else this template's tokenizer)."""
        text = self.render_text(demos, query)
        return RenderedPrompt(text, count_tokens(text, tokenizer or self.tokenizer, add_special_tokens=False))

    def amateur_text(
        self,
        demos: Sequence[Mapping[str, Any]],
        query: Mapping[str, Any] | str,
        variant: AmateurVariant,
    ) -> str:
        """Input-contrast's weakened chat prompt; see :meth:`FewShotTemplate.amateur_text`."""
        t = self.template
        if variant == "no-demos":
            return self._apply(t.to_messages([], query, self.system_prompt))
        if variant == "no-context":
            t.amateur_text(demos, query, variant)  # same validation as the text form
            return self._apply(t.to_messages(demos, query, self.system_prompt, with_context=False))
        if variant == "noisy-instruction":
            return self._apply(t.to_messages(demos, query, t.noisy_instruction))
        raise ValueError(f"variant={variant!r} is not an amateur variant; use one of {AMATEUR_VARIANTS}")
