"""Input contrast: the expert against itself on an altered prompt (one per row).

Instructive Decoding (Kim et al. 2024: a noisy instruction), Contrastive Input Decoding (Yona et al. 2023:
a perturbed input), context-aware decoding (Shi et al. 2023: the prompt without its context) and
with/without-demonstrations contrast all fit here: the amateur is the same model reading another prompt.
This module holds the strategy (:func:`input_contrast`), its processor (:class:`InputContrast`), and the
altered-input helpers: the noisy instructions (:data:`OPPOSITE_INSTRUCTION` is the one text every part of
counterpoint uses), token perturbation, span removal; :func:`~counterpoint.batching.left_pad` batches the
altered prompts. Prompt-level variants (no demonstrations, no context, noisy instruction) are rendered by
the prompting templates from :data:`AMATEUR_VARIANTS`.

Example:
    >>> alt = [tok(noisy_instruction(inst, "opposite") + "\\n" + query).input_ids for inst, query in rows]
    >>> batch = left_pad(alt, pad_token_id=tok.pad_token_id)
    >>> model.generate(**real, custom_generate=input_contrast, amateur_input_ids=batch["input_ids"],
    ...                amateur_attention_mask=batch["attention_mask"], contrast=INSTRUCTIVE_DECODING)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from counterpoint.batching import left_pad
from counterpoint.decoding.engine import AlteredPrompt, CachedAmateurContrast, lm_rows, run_contrast, strategy
from counterpoint.decoding.scores import CONTRAST_OPTIONS, ContrastConfig
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.decoding.standard import SEARCH_OPTIONS, check_sampling, search_kwargs

__all__ = [
    "AMATEUR_VARIANTS",
    "INSTRUCTIVE_DECODING",
    "OPPOSITE_INSTRUCTION",
    "SPEC",
    "InputContrast",
    "input_contrast",
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

# How a prompt template can weaken a prompt for the amateur view (see FewShotTemplate.amateur_text).
AMATEUR_VARIANTS = ("no-demos", "no-context", "noisy-instruction")
AmateurVariant = Literal["no-demos", "no-context", "noisy-instruction"]


class InputContrast(CachedAmateurContrast):
    """The amateur is the expert itself on an altered prompt, one per row, with its own KV cache.

    The altered prompt (a noisy or opposite instruction, a perturbed input, the prompt without its context
    or without its demonstrations) is followed by the same generated tokens as the real row: the amateur
    scores ``p(y_t | x', y_<t)``.

    Stateful: holds the altered rows' KV cache; call :meth:`reset` before reusing it.

    Args:
        model: the expert (or any model sharing its vocabulary).
        amateur_input_ids: ``(B, T')`` altered prompts, left padded, one per prompt of the batch.
        amateur_attention_mask: ``(B, T')``; default: all ones (no padding).
        contrast: how scores combine. Instructive Decoding's reference code corresponds to
            :data:`INSTRUCTIVE_DECODING` (the difference form, gamma = epsilon = 0.3, no plausibility mask).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        amateur_input_ids: torch.Tensor,
        amateur_attention_mask: torch.Tensor | None = None,
        contrast: ContrastConfig | None = None,
    ) -> None:
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
        view = AlteredPrompt(amateur_input_ids, amateur_attention_mask, vocab_size=lm_rows(model))
        super().__init__(model, view, contrast)

    @property
    def amateur_input_ids(self) -> torch.Tensor:
        return self.view.input_ids

    @property
    def amateur_attention_mask(self) -> torch.Tensor:
        return self.view.attention_mask


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


@strategy
def input_contrast(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any = None,
    amateur_input_ids: torch.Tensor | None = None,
    amateur_attention_mask: torch.Tensor | None = None,
    contrast: ContrastConfig | None = None,
    **model_kwargs: Any,
) -> Any:
    """Contrast the expert with itself on altered prompts (noisy instruction, no context, ...).

    Use as ``model.generate(**batch, custom_generate=input_contrast, amateur_input_ids=alt_ids,
    amateur_attention_mask=alt_mask, contrast=ContrastConfig(...))``, one altered prompt per row of
    ``batch``, left padded (see :mod:`counterpoint.decoding.altered` to build them). The altered rows run
    in their own forward with their own KV cache, so the expert's loop and cache are transformers' own.

    Args:
        amateur_input_ids: ``(B, T')`` altered prompts, left padded.
        amateur_attention_mask: ``(B, T')``; default all ones.
    """
    if amateur_input_ids is None:
        raise ValueError("input_contrast needs amateur_input_ids=<(B, T') altered prompts, left padded>")
    expand = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1)
    batch = input_ids.shape[0] // expand
    if amateur_input_ids.dim() == 2 and amateur_input_ids.shape[0] != batch:
        raise ValueError(
            f"amateur_input_ids has {amateur_input_ids.shape[0]} rows but the batch has {batch} prompts: "
            "give one altered prompt per prompt"
        )
    if amateur_attention_mask is not None:
        amateur_attention_mask = amateur_attention_mask.to(input_ids.device)
    processor = InputContrast(model, amateur_input_ids.to(input_ids.device), amateur_attention_mask, contrast)
    return run_contrast(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


SPEC = StrategySpec(
    position=40,
    name="input-contrast",
    summary="full prompt vs a weakened prompt (no demos, no context, noisy instruction)",
    options=(
        Option("variant", "str", "the amateur's prompt", default="no-demos", choices=AMATEUR_VARIANTS),
        *CONTRAST_OPTIONS,
        *SEARCH_OPTIONS,
    ),
    build=lambda values: {
        "custom_generate": input_contrast,
        "contrast": ContrastConfig.from_options(values),
        **search_kwargs(values),
    },
    no_vllm="input contrast (the amateur reading another prompt) is not built for vLLM",
    amateur_prompt=True,
    check=check_sampling,
    streams=lambda values: values["num_beams"] == 1,
    aliases=("input_contrast",),
)
