"""Prompt rows for plain generation: from arguments, a JSONL file or standard input, rendered as text or chat.

What ``counterpoint generate`` reads, as a library: :func:`prompt_rows` collects and checks the rows
before any model loads; :func:`render_prompts` turns them into the texts the model reads (through the
tokenizer's chat template with ``chat=True``), with the amateur prompts input contrast needs.

Example:
    >>> rows = prompt_rows(["The capital of France is"])
    >>> rows
    [{'prompt': 'The capital of France is'}]
    >>> render_prompts(rows).texts
    ['The capital of France is']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from counterpoint.errors import MISSING, OptionError

__all__ = ["RenderedPrompts", "prompt_rows", "render_prompts"]


def prompt_rows(
    prompts: Sequence[str] = (),
    input_path: str | os.PathLike[str] | None = None,
    *,
    prompt_key: str = "prompt",
    stdin: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows to generate for: ``{prompt_key: text, ...}`` dicts, checked.

    Args:
        prompts: prompts given directly (command-line arguments).
        input_path: a JSONL file, one object per line holding ``prompt_key`` (and anything else, kept).
        prompt_key: the field holding the prompt.
        stdin: lines of standard input, one prompt per line (blank lines skipped), used when neither
            ``prompts`` nor ``input_path`` is given.

    Raises:
        OptionError: both sources given, no prompts at all, or an empty or missing prompt (naming its row).
    """
    from counterpoint.io import iter_jsonl_lines

    if prompts and input_path is not None:
        raise OptionError(
            "input", str(input_path), "cannot be used with prompts given as arguments; give one or the other"
        )
    if input_path is not None:
        rows = []
        for lineno, row in iter_jsonl_lines(input_path, "input"):
            text = row.get(prompt_key)
            if not isinstance(text, str):
                raise OptionError(
                    "prompt_key", prompt_key,
                    f"is not a string field of input file {str(input_path)!r}, line {lineno}; it has keys {sorted(row)}",
                )  # fmt: skip
            if not text.strip():
                raise OptionError(
                    "input", str(input_path), f"line {lineno}: the prompt ({prompt_key!r}) is empty"
                )
            rows.append(row)
        if not rows:
            raise OptionError("input", str(input_path), "holds no rows: nothing to generate for")
        return rows
    if not prompts and stdin is not None:
        prompts = [line.rstrip("\n") for line in stdin if line.strip()]
    if not prompts:
        raise OptionError(
            "prompts",
            [],
            "are missing: pass prompts as arguments, a JSONL file (--input), or lines on standard input",
        )
    for i, text in enumerate(prompts):
        if not isinstance(text, str) or not text.strip():
            raise OptionError(f"prompts[{i}]", text, "is empty: every prompt needs some text")
    return [{prompt_key: text} for text in prompts]


@dataclass(frozen=True)
class RenderedPrompts:
    """The texts a model reads for a list of prompt rows."""

    texts: list[str]
    amateur_texts: list[str] | None  # input contrast: one per text, else None
    add_special_tokens: bool  # False when the chat template already added them


def render_prompts(
    rows: Sequence[dict[str, Any]],
    *,
    prompt_key: str = "prompt",
    amateur_prompt: str | None = None,
    amateur_key: str = "amateur_prompt",
    needs_amateur: bool = False,
    chat: bool = False,
    system_prompt: str | None = None,
    tokenizer: Any = None,
) -> RenderedPrompts:
    """The prompt texts (and amateur prompts) of ``rows``, as text or through a chat template.

    Args:
        rows: from :func:`prompt_rows`.
        prompt_key: the field holding the prompt.
        amateur_prompt: input contrast: the amateur's prompt for every row without its own ``amateur_key``.
        amateur_key: the field of a row holding its own amateur prompt.
        needs_amateur: the strategy reads amateur prompts (input contrast); otherwise none may be given.
        chat: send each prompt as a user turn through ``tokenizer``'s chat template.
        system_prompt: with ``chat``: the system turn.
        tokenizer: with ``chat``: the model's tokenizer.

    Raises:
        OptionError: an amateur prompt missing (or given for a strategy that takes none); ``system_prompt``
            without ``chat``.
    """
    if system_prompt is not None and not chat:
        raise OptionError(
            "system_prompt", system_prompt, "needs chat (--chat): a system turn is part of a chat template"
        )
    amateurs = None
    if needs_amateur:
        amateurs = []
        for n, row in enumerate(rows):
            text = row.get(amateur_key, amateur_prompt)
            if not isinstance(text, str) or not text.strip():
                raise OptionError(
                    "amateur_prompt", MISSING,
                    f"is needed by input contrast: give it, or an {amateur_key!r} field in every row (row {n + 1} has none)",
                )  # fmt: skip
            amateurs.append(text)
    elif amateur_prompt is not None:
        raise OptionError("amateur_prompt", amateur_prompt, "applies to strategy 'input-contrast' only")
    texts = [row[prompt_key] for row in rows]
    if not chat:
        return RenderedPrompts(texts, amateurs, True)
    from counterpoint.prompting.template import FewShotTemplate

    template = FewShotTemplate(chat_user_format="{input}").chat(tokenizer, system_prompt)
    texts = [template.render_text([], t) for t in texts]
    if amateurs is not None:
        amateurs = [template.render_text([], t) for t in amateurs]
    return RenderedPrompts(texts, amateurs, False)
