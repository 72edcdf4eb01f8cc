"""Contrastive decoding: the expert against a second, smaller model sharing its tokenizer.

Li et al. 2022 ("Contrastive Decoding: Open-ended Text Generation as Optimization") and O'Brien and Lewis
2023 ("Contrastive Decoding Improves Reasoning in Large Language Models"). The amateur keeps its own KV
cache and reads an input view: the expert's full prompt (default) or, as in Li et al.'s reference code
(``ignore_prefix``), only the prompt's last token. It is a :class:`~transformers.LogitsProcessor`
(:class:`ModelContrast`) and a ``generate(custom_generate=...)`` strategy (:func:`contrastive_decoding`)
under greedy, sampling or beam search; on vLLM it runs as an engine logits processor
(:mod:`counterpoint.decoding.vllm`).

Example:
    >>> out = expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur,
    ...                       contrast=ContrastConfig(form="beta", beta=0.5), max_new_tokens=32)
"""

from __future__ import annotations

import copy
import os
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from counterpoint import _hf
from counterpoint.decoding.engine import (
    CachedAmateurContrast,
    FullPrompt,
    LastToken,
    check_vocabularies,
    lm_rows,
    run_contrast,
    strategy,
)
from counterpoint.decoding.scores import CONTRAST_OPTIONS, ContrastConfig
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.decoding.standard import SEARCH_OPTIONS, check_sampling, search_kwargs, vllm_search
from counterpoint.errors import OptionError

__all__ = ["SPEC", "ModelContrast", "contrastive_decoding", "truncated_amateur"]

AmateurView = Literal["full", "last-token"]
AMATEUR_VIEWS = ("full", "last-token")


class ModelContrast(CachedAmateurContrast):
    """The amateur is a second, smaller model sharing the expert's tokenizer.

    Stateful: holds the amateur's KV cache for the current generation; call :meth:`reset` before reusing
    it (the ``contrastive_decoding`` custom_generate function does).

    Args:
        amateur_model: causal LM with the expert's vocabulary. It may sit on another device; its logits are
            moved to the expert's device. Its lm_head may be padded past the shared tokenizer.
        contrast: how scores combine (default ``ContrastConfig()``).
        attention_mask: ``(B, T)`` the prompt's attention mask as passed to ``generate`` (left padded).
            Needed for padded batches; rows are repeated for beams. When omitted, leading ``pad_token_id``
            tokens count as padding.
        pad_token_id: used only when ``attention_mask`` is None (default: the amateur's generation config).
        expert_model: lets the vocabularies be checked now rather than on the first step.
        expert_tokenizer, amateur_tokenizer: see :func:`~counterpoint.decoding.engine.check_vocabularies`.
        amateur_view: ``"full"`` (the amateur reads the whole prompt) or ``"last-token"`` (only the prompt's
            last token, at position 0, then the continuation: Li et al.'s ``ignore_prefix``).
    """

    def __init__(
        self,
        amateur_model: PreTrainedModel,
        contrast: ContrastConfig | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        expert_model: PreTrainedModel | None = None,
        expert_tokenizer: Any = None,
        amateur_tokenizer: Any = None,
        amateur_view: AmateurView = "full",
    ) -> None:
        if not isinstance(amateur_model, PreTrainedModel):
            raise TypeError(
                f"amateur_model must be a transformers PreTrainedModel, got {type(amateur_model).__name__}"
            )
        if amateur_view not in AMATEUR_VIEWS:
            raise OptionError("amateur_view", amateur_view, f"is not one of: {', '.join(AMATEUR_VIEWS)}")
        if pad_token_id is None:
            pad_token_id = amateur_model.generation_config.pad_token_id
        view = FullPrompt(attention_mask, pad_token_id) if amateur_view == "full" else LastToken()
        super().__init__(amateur_model, view, contrast)
        self._real_vocab = check_vocabularies(
            lm_rows(expert_model) if expert_model is not None else None,
            lm_rows(amateur_model),
            expert_tokenizer,
            amateur_tokenizer,
        )

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return getattr(self.view, "attention_mask", None)

    @property
    def pad_token_id(self) -> int | None:
        return getattr(self.view, "pad_token_id", None)

    @pad_token_id.setter
    def pad_token_id(self, value: int | None) -> None:
        if isinstance(self.view, FullPrompt):
            self.view.pad_token_id = value


@strategy
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
    amateur_view: AmateurView = "full",
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
        amateur_view: ``"full"`` or ``"last-token"`` (see :class:`ModelContrast`).

    Returns:
        What ``generate`` returns: ``(B * num_return_sequences, T + new)`` ids or a ``GenerateOutput``.
    """
    if amateur_model is None:
        raise ValueError(
            "contrastive_decoding needs amateur_model=<a PreTrainedModel sharing the expert's tokenizer>"
        )
    attention_mask = model_kwargs.get("attention_mask")  # (N, T) already expanded, None when unpadded
    processor = ModelContrast(
        amateur_model,
        contrast,
        attention_mask=attention_mask,
        expert_model=model,
        expert_tokenizer=expert_tokenizer,
        amateur_tokenizer=amateur_tokenizer,
        amateur_view=amateur_view,
    )
    if attention_mask is None:
        processor.pad_token_id = None  # generate dropped an all-ones mask: nothing is padding
    return run_contrast(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


def truncated_amateur(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A copy of ``model`` keeping only its first ``num_layers`` decoder layers (and its norm and head).

    A cheap same-tokenizer amateur where no smaller model of the family exists. Shares no parameters with
    ``model`` (a deep copy), in eval mode.
    """
    layers, _, _ = _hf.decoder_parts(model)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= len(layers):
        raise OptionError(
            "num_layers",
            num_layers,
            f"must be an int in [1, {len(layers)}] (the model has {len(layers)} layers)",
        )
    small = copy.deepcopy(model)
    kept, _, _ = _hf.decoder_parts(small)
    del kept[num_layers:]
    config = small.config.get_text_config()
    for name in ("num_hidden_layers", "n_layer"):
        if hasattr(config, name):
            setattr(config, name, num_layers)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[:num_layers]
    return small.eval()


def _build(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "custom_generate": contrastive_decoding,
        "amateur_model": values["amateur"],
        "contrast": ContrastConfig.from_options(values),
        "amateur_view": values["amateur_view"],
        **search_kwargs(values),
    }


def _build_vllm(values: dict[str, Any]) -> dict[str, Any]:
    amateur = values["amateur"]
    if not isinstance(amateur, str | os.PathLike):
        raise OptionError(
            "amateur", type(amateur).__name__,
            "is a loaded model: on the vLLM backend amateur must be the amateur's folder or Hub id (the engine "
            "loads it beside the expert)",
        )  # fmt: skip
    if values["num_beams"] > 1:
        raise OptionError(
            "num_beams", values["num_beams"],
            "is not available for strategy 'contrastive-decoding' on the vLLM backend, which runs it greedy "
            "or sampled (do_sample); use the transformers backend for contrastive beam search",
        )  # fmt: skip
    if values["amateur_view"] != "full":
        raise OptionError(
            "amateur_view", values["amateur_view"], "is not available on the vLLM backend (only 'full')"
        )
    return {
        "mode": "sample",
        "contrast": ContrastConfig.from_options(values),
        "amateur": os.fspath(amateur),
        **vllm_search(values, sample=bool(values["do_sample"])),
    }


SPEC = StrategySpec(
    position=20,
    name="contrastive-decoding",
    summary="expert vs a smaller amateur model (Li et al. 2022; O'Brien and Lewis 2023)",
    options=(
        Option("amateur", "model", "the amateur model: a path or name, or a loaded model", required=True),
        Option(
            "amateur_view",
            "str",
            "what the amateur reads: the full prompt or its last token only (Li et al.)",
            default="full",
            choices=AMATEUR_VIEWS,
        ),
        *CONTRAST_OPTIONS,
        *SEARCH_OPTIONS,
    ),  # fmt: skip
    build=_build,
    build_vllm=_build_vllm,
    check=check_sampling,
    streams=lambda values: values["num_beams"] == 1,
    aliases=("contrastive_decoding",),
)
