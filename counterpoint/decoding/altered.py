"""Building the altered prompts that :func:`~counterpoint.decoding.input_contrast` contrasts against.

Prompt strings come from templates (``counterpoint.prompting``); this module holds the few pieces that
are about contrast itself: the noisy instructions of Instructive Decoding, token-level perturbation and
span removal on token ids, and left padding into the ``(B, T')`` batch that ``input_contrast`` takes.

Example:
    >>> alt = [tok(noisy_instruction(inst, "opposite") + "\\n" + query).input_ids for inst, query in rows]
    >>> batch = left_pad(alt, pad_token_id=tok.pad_token_id)
    >>> model.generate(**real, custom_generate=input_contrast, amateur_input_ids=batch["input_ids"],
    ...                amateur_attention_mask=batch["attention_mask"], contrast=INSTRUCTIVE_DECODING)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import torch

from counterpoint.decoding.scores import ContrastConfig

__all__ = [
    "INSTRUCTIVE_DECODING",
    "OPPOSITE_INSTRUCTION",
    "left_pad",
    "noisy_instruction",
    "perturb_token_ids",
    "without_spans",
]

# The "opposite" meta-instruction of Instructive Decoding (Kim et al. 2024, reference code).
OPPOSITE_INSTRUCTION = "Always respond with the opposite of what you're asked. You never get it right."

# Instructive Decoding's rule, z_e - 0.3 * z_noisy on logits: the difference form with gamma = epsilon = 0.3
# (log-probabilities differ from logits by a per-row constant, which changes no argmax and no softmax).
# ID has no plausibility mask; alpha = 1e-9 keeps every token within 20.7 nats of the top one.
INSTRUCTIVE_DECODING = ContrastConfig(form="difference", gamma=0.3, tau=1.0, alpha=1e-9)

NoiseKind = Literal["opposite", "null", "random_words", "truncate_shuffle"]


def noisy_instruction(
    instruction: str,
    kind: NoiseKind = "opposite",
    *,
    words: Sequence[str] | None = None,
    keep: float = 0.5,
    seed: int = 0,
) -> str:
    """A noisy version of ``instruction`` (Instructive Decoding's variants).

    Args:
        instruction: the task instruction to replace.
        kind: ``"opposite"`` (:data:`OPPOSITE_INSTRUCTION`), ``"null"`` (no instruction),
            ``"random_words"`` (as many words as the instruction, drawn from ``words``, default the
            instruction's own words, with replacement), ``"truncate_shuffle"`` (the first ``keep`` share of
            the words, shuffled).
        words: word pool for ``"random_words"``.
        keep: share of words kept by ``"truncate_shuffle"``, in (0, 1].
        seed: seed of the random variants.
    """
    rng = random.Random(seed)
    split = instruction.split()
    if kind == "opposite":
        return OPPOSITE_INSTRUCTION
    if kind == "null":
        return ""
    if kind == "random_words":
        pool = list(words) if words is not None else split
        if not pool:
            raise ValueError("random_words needs words=<a non-empty word pool> when the instruction is empty")
        return " ".join(rng.choice(pool) for _ in split)
    if kind == "truncate_shuffle":
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep={keep!r} must be in (0, 1]")
        kept = split[: max(1, round(len(split) * keep))] if split else []
        rng.shuffle(kept)
        return " ".join(kept)
    raise ValueError(
        f"kind={kind!r} is not a noise kind; use 'opposite', 'null', 'random_words' or 'truncate_shuffle'"
    )


def perturb_token_ids(
    ids: Sequence[int],
    rate: float,
    vocab_size: int,
    *,
    protect: Sequence[int] = (),
    seed: int = 0,
) -> list[int]:
    """Replace a share ``rate`` of the tokens with random ids (a perturbed input, in the spirit of
    Contrastive Input Decoding, which edits the input and contrasts the two continuations).

    Args:
        ids: token ids of one prompt.
        rate: share of positions replaced, in [0, 1]; ``round(rate * len(ids))`` positions are chosen.
        vocab_size: random ids are drawn from ``[0, vocab_size)``, never equal to the replaced id.
        protect: positions never replaced (e.g. the chat template's special tokens).
        seed: seed of the choice.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate!r} must be in [0, 1]")
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size!r} must be >= 2")
    rng = random.Random(seed)
    free = [i for i in range(len(ids)) if i not in set(protect)]
    chosen = rng.sample(free, min(len(free), round(rate * len(ids))))
    out = list(ids)
    for i in chosen:
        new = rng.randrange(vocab_size - 1)
        out[i] = new if new < out[i] else new + 1  # uniform over the other ids
    return out


def without_spans(ids: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """``ids`` with the half-open token spans ``[start, end)`` removed (the prompt without its context or
    without its demonstrations). Spans may come in any order and must not overlap."""
    spans = sorted(spans)
    for (s0, e0), (s1, _) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise ValueError(f"spans {(s0, e0)} and {(s1, _)} overlap")
    for s, e in spans:
        if not 0 <= s <= e <= len(ids):
            raise ValueError(f"span {(s, e)} is outside the prompt's {len(ids)} tokens")
    drop = {i for s, e in spans for i in range(s, e)}
    return [t for i, t in enumerate(ids) if i not in drop]


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad token-id lists into ``{"input_ids", "attention_mask"}``, both ``(B, T')`` long.

    Raises:
        ValueError: a sequence is empty (the amateur needs at least one token to condition on).
    """
    if not sequences:
        raise ValueError("sequences is empty: give one altered prompt per row")
    empty = [i for i, s in enumerate(sequences) if len(s) == 0]
    if empty:
        raise ValueError(f"sequences {empty} are empty: every altered prompt needs at least one token")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return {"input_ids": ids, "attention_mask": mask}
