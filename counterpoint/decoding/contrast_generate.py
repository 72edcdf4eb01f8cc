"""Expert-vs-amateur contrast as drop-in ``generate(custom_generate=...)`` strategies.

Each function builds its amateur source (:mod:`counterpoint.decoding.processors`), resets it, puts it
FIRST in the logits-processor list that ``generate`` prepared (so the contrast is taken on the raw expert
logits, before any temperature/top-k/top-p warper the user set), and hands over to transformers' own loop:
``GenerationMixin._sample`` for greedy and sampling, ``GenerationMixin._beam_search`` for beams. Stopping
criteria, ``return_dict_in_generate``, scores and cache handling are therefore transformers' own.

Example:
    >>> from counterpoint.decoding import ContrastConfig, contrastive_decoding, layer_contrast, input_contrast
    >>> out = expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur,
    ...                       contrast=ContrastConfig(form="beta", beta=0.5), max_new_tokens=32)
    >>> out = expert.generate(**batch, custom_generate=layer_contrast, amateur_layers=[0, 2, 4, 6],
    ...                       layer_mode="jsd", contrast=ContrastConfig(form="difference"), num_beams=4)
    >>> out = expert.generate(**batch, custom_generate=input_contrast, amateur_input_ids=noisy["input_ids"],
    ...                       amateur_attention_mask=noisy["attention_mask"], do_sample=True, top_p=0.9)
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
)
from transformers.generation import logits_process as lp

from counterpoint.decoding._compat import generate_strategy
from counterpoint.decoding.processors import (
    ContrastLogitsProcessor,
    InputContrast,
    LayerContrast,
    LayerMode,
    ModelContrast,
)
from counterpoint.decoding.scores import ContrastConfig

__all__ = ["contrastive_decoding", "input_contrast", "layer_contrast"]

# Processors that may follow a head-only LayerContrast: each maps scores shifted by a per-row constant to
# its own output shifted by a per-row constant (or to the same mask), so greedy's argmax and sampling's
# softmax are unchanged. Checked against their transformers source: the warpers scale (temperature) or
# rank / softmax (top-k, top-p, top-h, min-p, typical, epsilon, eta); the others add a per-token bias, set
# -inf, or overwrite a row. Not here on purpose: RepetitionPenalty and ExponentialDecayLengthPenalty
# (multiply by the score's sign) and anything unknown (user processors): those keep the exact path.
_ROW_SHIFT_SAFE = tuple(
    getattr(lp, name)
    for name in (
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TopHLogitsWarper", "MinPLogitsWarper",
        "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper", "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor", "NoRepeatNGramLogitsProcessor", "SequenceBiasLogitsProcessor",
        "NoBadWordsLogitsProcessor", "PrefixConstrainedLogitsProcessor", "ForcedBOSTokenLogitsProcessor",
        "ForcedEOSTokenLogitsProcessor", "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
        "LogitNormalization",
    )
    if hasattr(lp, name)
)  # fmt: skip


def _run(
    model: PreTrainedModel,
    processor: ContrastLogitsProcessor,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool,
    streamer: Any,
    model_kwargs: dict[str, Any],
) -> Any:
    """Run transformers' own loop with ``processor`` first in the list; always release it after."""
    if getattr(generation_config, "num_beam_groups", 1) not in (None, 1):
        raise ValueError(
            "contrast strategies support greedy, sampling and beam search, not group beam search"
        )
    processor.reset()
    # Rows per prompt: generate expanded each prompt to num_beams / num_return_sequences adjacent rows.
    processor.group_size = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1)
    processors = LogitsProcessorList([processor, *(logits_processor or [])])
    try:
        if (generation_config.num_beams or 1) > 1:
            return GenerationMixin._beam_search(
                model,
                input_ids,
                logits_processor=processors,
                stopping_criteria=stopping_criteria,
                generation_config=generation_config,
                synced_gpus=synced_gpus,
                **model_kwargs,
            )
        return GenerationMixin._sample(
            model,
            input_ids,
            logits_processor=processors,
            stopping_criteria=stopping_criteria,
            generation_config=generation_config,
            synced_gpus=synced_gpus,
            streamer=streamer,
            **model_kwargs,
        )
    finally:
        processor.close()


@generate_strategy
def contrastive_decoding(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any = None,
    amateur_model: PreTrainedModel | None = None,
    contrast: ContrastConfig | None = None,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
    **model_kwargs: Any,
) -> Any:
    """Contrastive decoding against a second, smaller model (Li et al. 2022; O'Brien and Lewis 2023).

    Use as ``model.generate(..., custom_generate=contrastive_decoding, amateur_model=amateur,
    contrast=ContrastConfig(...))``; greedy, sampling or beam search follow ``generate``'s own config.

    Args:
        amateur_model: causal LM sharing the expert's tokenizer; may sit on another device.
        contrast: score form and knobs (default ``ContrastConfig()``: beta form, beta 0.5, alpha 0.1).
        expert_tokenizer, amateur_tokenizer: optional; compared when both are given, and needed when one
            lm_head is padded past the shared tokenizer (different row counts).

    Returns:
        What ``generate`` returns: ``(B * num_return_sequences, T + new)`` ids or a ``GenerateOutput``.
    """
    if amateur_model is None:
        raise ValueError(
            "contrastive_decoding needs amateur_model=<a PreTrainedModel sharing the expert's tokenizer>"
        )
    processor = ModelContrast(
        amateur_model,
        contrast,
        attention_mask=model_kwargs.get("attention_mask"),  # (N, T) already expanded, None when unpadded
        expert_model=model,
        expert_tokenizer=expert_tokenizer,
        amateur_tokenizer=amateur_tokenizer,
    )
    if model_kwargs.get("attention_mask") is None:
        processor.pad_token_id = None  # generate dropped an all-ones mask: nothing is padding
    return _run(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


@generate_strategy
def layer_contrast(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any = None,
    amateur_layers: int | list[int] | None = None,
    layer_mode: LayerMode | None = None,
    contrast: ContrastConfig | None = None,
    head_only: bool | None = None,
    **model_kwargs: Any,
) -> Any:
    """Contrast the expert with its own earlier layer(s), read from the same forward pass (DoLa-style).

    Use as ``model.generate(..., custom_generate=layer_contrast, amateur_layers=[0, 2, 4],
    layer_mode="jsd", contrast=ContrastConfig(...))``. See :class:`LayerContrast` for the layer indexing
    and the three modes.

    Args:
        head_only: compute the amateur on the expert's plausible head only (see :class:`LayerContrast`).
            None (default) turns it on exactly when the tokens cannot change: greedy or sampling (not beam
            search), layer_mode ``"fixed"`` or ``"fusion"``, ``output_scores`` off (so returned scores are
            always the formula's), and every other logits processor is shift invariant (a repetition
            penalty or a processor of your own keeps the full path). True forces it where the search
            allows it (``output_scores`` then come shifted by a per-row constant); False never uses it.
    """
    if amateur_layers is None:
        raise ValueError("layer_contrast needs amateur_layers=<int or list of ints> (0 = embedding output)")
    if head_only not in (None, True, False):
        raise TypeError(f"head_only={head_only!r} must be None (automatic), True or False")
    beams = (generation_config.num_beams or 1) > 1
    if head_only and beams:
        raise ValueError(
            f"head_only=True works under greedy and sampling, not beam search (num_beams="
            f"{generation_config.num_beams}): beam search adds scores across steps and compares them across "
            "rows, where the per-row constant it drops matters; use head_only=None or False"
        )
    processor = LayerContrast(model, amateur_layers, layer_mode, contrast, head_only=bool(head_only))
    if head_only is None:
        processor.head_only = (
            not beams
            and processor.layer_mode != "jsd"
            and not generation_config.output_scores
            and all(isinstance(p, _ROW_SHIFT_SAFE) for p in logits_processor or [])
        )
    return _run(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


@generate_strategy
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
    return _run(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip
