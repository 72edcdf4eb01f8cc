"""Contrastive decoding: the expert against a second, smaller model sharing its tokenizer.

Li et al. 2022 ("Contrastive Decoding: Open-ended Text Generation as Optimization") and O'Brien and Lewis
2023 ("Contrastive Decoding Improves Reasoning in Large Language Models"). The amateur keeps its own KV
cache and reads an input view: the expert's full prompt (default) or, as in Li et al.'s reference code
(``ignore_prefix``), only the prompt's last token. It is a :class:`~transformers.LogitsProcessor`
(:class:`ModelContrast`) and a ``generate(custom_generate=...)`` strategy (:func:`contrastive_decoding`)
under greedy, sampling or beam search; on vLLM it runs as an engine logits processor
(:mod:`counterpoint.decoding.vllm`).

Presets (:data:`CD_PRESETS`, the strategy's ``preset`` option, ``--preset`` on the command line) hold the
papers' settings; each names its source (:attr:`Preset.source`). Options given explicitly override them.

* ``li2022-greedy``: Li et al.'s greedy runs: difference form, gamma (their ``st_coef``) 1.0, amateur
  temperature 0.5, the amateur on the prompt's last token, and NO plausibility mask (``alpha=0``): their
  greedy code path sets none, unlike the paper's objective (sec. 3.3). Without the mask the argmax can be
  a token both models find unlikely; add the paper's constraint with ``alpha=0.1``.
* ``li2022-sample``: Li et al.'s sampling runs: difference form, gamma 1.0, amateur temperature 1.0 (their
  OPT runs), mask at alpha 0.1, the last-token view, sampling at temperature 1 with no top-k / top-p.
* ``obrien2023``: O'Brien and Lewis: beta form, beta 0.5, alpha 0.1, raw amateur logits, full prompt, greedy.

Beam search is not Li et al.'s. Their beam search (reference code, ``generation_utils.py``
``beam_search``, lines 2472-2690, and ``decoder_helper.py`` ``post_process_reweight``) differs from
``contrastive_decoding(num_beams=k)`` here in three ways:

* candidates: they take the top ``2k`` (beam, token) pairs of the prompt's beams by the expert's
  *this-step*, unmasked log-probability alone (on the first step, by the first beam's masked
  log-probabilities), then rank those ``2k`` by beam score + contrast; here every token of every beam
  competes by its cumulative contrast score;
* the mask keeps at least 2 tokens per beam (``min_tokens_to_keep=2``), here only the argmax is sure to
  stay;
* the amateur term is ``log_softmax(logits) / tau`` (a row constant apart from
  ``log_softmax(logits / tau)``, which matters once scores from different beams are compared), and
  tokens outside the amateur's own support score ``-inf``.

Both accumulate the per-step contrast over the sequence. No preset here runs their beam search; the
presets are greedy or sampled, where the two codes agree token for token.

Example:
    >>> out = expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur,
    ...                       **CD_PRESETS["li2022-greedy"].generate_kwargs(), max_new_tokens=32)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
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

__all__ = ["CD_PRESETS", "SPEC", "ModelContrast", "Preset", "contrastive_decoding", "truncated_amateur"]

AmateurView = Literal["full", "last-token"]
AMATEUR_VIEWS = ("full", "last-token")


@dataclass(frozen=True)
class Preset:
    """A paper's settings for contrastive decoding: option values of the ``contrastive-decoding`` strategy.

    Attributes:
        name: what ``preset=`` / ``--preset`` takes.
        options: the values it sets (contrast knobs, ``amateur_view``, the search).
        source: where each value comes from (file and line of the reference code, or paper section).
    """

    name: str
    options: Mapping[str, Any]
    source: str

    @property
    def contrast(self) -> ContrastConfig:
        return ContrastConfig.from_options(self.options)

    def generate_kwargs(self) -> dict[str, Any]:
        """``contrast``, ``amateur_view`` and the search's ``generate`` kwargs, for ``model.generate``."""
        return {
            "contrast": self.contrast,
            "amateur_view": self.options["amateur_view"],
            **search_kwargs(self.options),
        }


_LI = "XiangLi1999/ContrastiveDecoding (commit 170e914)"
CD_PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        p.name: p
        for p in (
            Preset(
                "li2022-greedy",
                {
                    "form": "difference",
                    "gamma": 1.0,
                    "tau": 0.5,
                    "alpha": 0.0,
                    "amateur_view": "last-token",
                    "do_sample": False,
                    "num_beams": 1,
                },
                f"{_LI}: the 'contrastive greedy' runs of text-generation/submit_decoding.py (lines 18, 25-26, "
                "51-56: st_coef 1.0 (0.8 also run), student_temperature 0.5, --ignore_prefix yes, --do_sample "
                "greedy). transformers/src/transformers/generation_utils.py: greedy search sets relative_top None "
                "(lines 1341-1345), so no plausibility mask (alpha 0); the amateur's logits are divided by "
                "student_temperature (1357-1369) and subtracted, st_coef times, from the expert's (1962-1963). "
                "run_generation.py ignore_prefix_prepare_inputs_for_generation (277-302): the amateur reads the "
                "prompt's last token at position 0, then the continuation. Li et al. 2022 sec. 3.4 sets "
                "tau to 0.5 or 1.0 and describes the last-token context window.",
            ),
            Preset(
                "li2022-sample",
                {
                    "form": "difference",
                    "gamma": 1.0,
                    "tau": 1.0,
                    "alpha": 0.1,
                    "amateur_view": "last-token",
                    "do_sample": True,
                    "num_beams": 1,
                    "temperature": 1.0,
                    "top_k": 0,
                },
                f"{_LI}: the sampling runs that were made (text-generation/submit_decoding.py lines 229-262, "
                "outputs_ignorePrefix_ccnews_256/*_sample_opt-125m-t1.0-r0.1-*: OPT-125m amateur, student_temperature "
                "1.0, relative_top 0.1, st_coef 1.0 (0.5, 0.8 and 1.2 also run), ignore_prefix on by default "
                "(run_generation.py line 444)); generation_utils.py sampling sets relative_top 0.1 (lines "
                "1389-1394: the plausibility mask, alpha 0.1) and samples softmax(masked expert log-probs - "
                "st_coef * amateur logits / tau) with no top-k or top-p (2243-2247; run_generation.py --k 0, --p 1.0).",
            ),
            Preset(
                "obrien2023",
                {
                    "form": "beta",
                    "beta": 0.5,
                    "alpha": 0.1,
                    "tau": 1.0,
                    "amateur_view": "full",
                    "do_sample": False,
                    "num_beams": 1,
                },
                "O'Brien and Lewis 2023, sec. 2 (their reformulation of CD, Algorithm 2): CD-logits = (1 + beta) "
                "s_e - beta s_a on raw logits, -inf where s_e < log(alpha) + max s_e; beta 0.5, alpha 0.1, greedy "
                "decoding (their reasoning tasks). The reformulation has no amateur temperature: s_a is the "
                "amateur's raw logits (tau 1). The amateur reads the whole prompt (no context restriction).",
            ),
        )
    }
)


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


# The search options of the contrast strategies, with top_k 0 allowed ("no top-k", as transformers reads
# it): Li et al. sample from the whole masked distribution, while generate() would otherwise apply its
# default top-k of 50.
_SEARCH_OPTIONS = tuple(
    Option("top_k", "int", "sampling: keep the k most likely (0: no top-k)", check=lambda v: v >= 0,
           valid="must be an int >= 0 (0: no top-k)")
    if o.name == "top_k" else o
    for o in SEARCH_OPTIONS
)  # fmt: skip


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
        Option(
            "preset",
            "str",
            "a paper's settings; options given override them (see counterpoint.decoding.CD_PRESETS)",
            choices=tuple(CD_PRESETS),
        ),
        *CONTRAST_OPTIONS,
        *_SEARCH_OPTIONS,
    ),  # fmt: skip
    build=_build,
    build_vllm=_build_vllm,
    check=check_sampling,
    streams=lambda values: values["num_beams"] == 1,
    aliases=("contrastive_decoding",),
    presets={name: preset.options for name, preset in CD_PRESETS.items()},
)
