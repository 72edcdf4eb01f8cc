"""Building a vLLM engine with counterpoint's contrastive logits processor, and generating with it.

vLLM is imported inside the functions (the optional ``vllm`` extra). Run engine code under an
``if __name__ == "__main__":`` guard: vLLM starts worker processes.

Example:
    >>> from counterpoint.decoding import GenerationOptions
    >>> from counterpoint.decoding.vllm import generate_vllm
    >>> outs = generate_vllm("path/to/expert", ["The capital of France is"], "contrastive-decoding",
    ...                      GenerationOptions(amateur="path/to/amateur", beta=0.5), max_new_tokens=16)
    >>> outs[0].text, outs[0].token_ids
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from counterpoint.decoding.registry import get_strategy
from counterpoint.decoding.spec import GenerationOptions, StrategySpec
from counterpoint.decoding.vllm.args import (
    AMATEUR_CONFIG_KEY,
    AMATEUR_DTYPE_CONFIG_KEY,
    contrast_extra_args,
    require_vllm,
)
from counterpoint.errors import OptionError

__all__ = [
    "DEFAULT_CPU_KVCACHE_GIB",
    "VllmEngineError",
    "VllmOutput",
    "build_llm",
    "engine_amateur",
    "generate_vllm",
    "sampling_params",
]

# vLLM's CPU build reserves VLLM_CPU_KVCACHE_SPACE GiB for its KV cache; unset, it takes most of the RAM
# (92% was seen here) and fails to start on a busy machine. counterpoint sets this default when the
# variable is unset: a quarter of the RAM, at most 4 GiB, at least 1. Set the variable to override it.
DEFAULT_CPU_KVCACHE_GIB = 4


class VllmEngineError(RuntimeError):
    """The vLLM engine failed to start; the message says why in one line and what to try."""


@dataclass(frozen=True)
class VllmOutput:
    """One prompt's generation: the new text and its token ids (prompt excluded)."""

    text: str
    token_ids: tuple[int, ...]


def _default_kvcache_space() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return str(DEFAULT_CPU_KVCACHE_GIB)
    return str(max(1, min(DEFAULT_CPU_KVCACHE_GIB, int(total // 4))))


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

    The engine can then serve contrastive and plain requests side by side. On vLLM's CPU build,
    ``VLLM_CPU_KVCACHE_SPACE`` defaults to a quarter of the RAM (at most 4 GiB) when unset.

    Raises:
        VllmEngineError: the engine did not start (one line: the cause and what to try).
    """
    require_vllm()
    from vllm import LLM

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", _default_kvcache_space())
    kwargs: dict[str, Any] = {"model": str(model_path), "dtype": dtype, "seed": seed}
    if amateur is not None:
        from counterpoint.decoding.vllm.processor import ContrastiveLogitsProcessor

        additional = dict(llm_kwargs.pop("additional_config", None) or {})
        additional[AMATEUR_CONFIG_KEY] = str(amateur)
        if amateur_dtype is not None:
            additional[AMATEUR_DTYPE_CONFIG_KEY] = amateur_dtype
        kwargs["additional_config"] = additional
        kwargs["logits_processors"] = [*llm_kwargs.pop("logits_processors", []), ContrastiveLogitsProcessor]
    kwargs.update(llm_kwargs)
    try:
        return LLM(**kwargs)
    except (RuntimeError, ValueError, OSError, MemoryError) as err:
        cause = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise VllmEngineError(
            f"the vLLM engine for {str(model_path)!r} failed to start: {cause} (on a CPU machine, check free "
            f"memory against VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE')} GiB)"
        ) from err


def engine_amateur(llm: Any) -> str | None:
    """The amateur a ``vllm.LLM`` was built with (:func:`build_llm` ``amateur=``), ``None`` without one."""
    config = getattr(getattr(llm, "llm_engine", None), "vllm_config", None)
    extra = getattr(config, "additional_config", None)
    return extra.get(AMATEUR_CONFIG_KEY) if isinstance(extra, Mapping) else None


def sampling_params(request: Mapping[str, Any], max_new_tokens: int, seed: int | None) -> Any:
    """vLLM's ``SamplingParams`` (or ``BeamSearchParams``) for a strategy's ``build_vllm`` settings."""
    vllm = require_vllm()
    if request["mode"] == "beam":
        from vllm.sampling_params import BeamSearchParams

        return BeamSearchParams(beam_width=request["num_beams"], max_tokens=max_new_tokens, temperature=0.0)
    temperature = request["temperature"]
    contrast = request.get("contrast")
    return vllm.SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature,
        top_p=request["top_p"] if temperature > 0 else 1.0,
        top_k=request["top_k"] if temperature > 0 else 0,
        seed=seed if temperature > 0 else None,
        extra_args=contrast_extra_args(contrast) if contrast is not None else None,
    )


def _legacy_options(strategy: str, legacy: dict[str, Any]) -> dict[str, Any]:
    """generate_vllm's pre-0.2 keywords (amateur, contrast, temperature, top_p, top_k, num_beams) as options."""
    warnings.warn(
        f"generate_vllm({', '.join(f'{k}=' for k in legacy)}) is deprecated; pass options=GenerationOptions(...)",
        DeprecationWarning,
        stacklevel=3,
    )
    out = dict(legacy)
    contrast = out.pop("contrast", None)
    if contrast is not None:
        out.update({k: getattr(contrast, k) for k in ("form", "alpha", "beta", "gamma", "tau")})
    if strategy in ("contrastive_decoding", "contrastive-decoding") and (out.get("temperature") or 0) > 0:
        out["do_sample"] = True
    if strategy in ("contrastive_decoding", "contrastive-decoding") and not out.get("do_sample"):
        for name in ("temperature", "top_p", "top_k"):
            out.pop(name, None)
    if strategy in ("sampling", "sample") and out.get("top_k") == 0:
        out.pop("top_k")
    if strategy in ("sampling", "sample") and out.get("top_p") == 1.0:
        out.pop("top_p")
    return out


def generate_vllm(
    model_path: str | os.PathLike[str] | None,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    strategy: str | StrategySpec = "greedy",
    options: GenerationOptions | Mapping[str, Any] | None = None,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    dtype: str = "float32",
    llm_kwargs: Mapping[str, Any] | None = None,
    llm: Any = None,
    **legacy: Any,
) -> list[VllmOutput]:
    """Generate with vLLM; one :class:`VllmOutput` per prompt, in order.

    Args:
        model_path: the expert: a local safetensors folder or Hub id (GGUF: convert first with
            :func:`counterpoint.models.resolve_language_model_path`). Ignored when ``llm`` is given.
        prompts: the prompts, as text (vLLM tokenizes it; the chat template is not applied) or as
            lists of token ids (given to the model as they are).
        strategy: a strategy name or spec that vLLM can run (greedy, sample, beam, contrastive-decoding);
            the others raise ``ValueError`` naming the transformers backend.
        options: the strategy's options (``amateur`` must be a folder or Hub id for contrastive decoding).
        max_new_tokens: tokens to generate at most per prompt.
        seed: the engine's and each sampled request's seed.
        dtype: the expert's dtype in vLLM (fp32 default, what the exactness tests assume).
        llm_kwargs: more ``vllm.LLM`` arguments (``tensor_parallel_size``, ``max_model_len``, ...).
        llm: an already-built ``vllm.LLM`` to reuse (built with :func:`build_llm` for contrast).
        **legacy: the keywords of counterpoint 0.1 (``amateur``, ``contrast``, ``temperature``, ``top_p``,
            ``top_k``, ``num_beams``), deprecated.

    Returns:
        ``list[VllmOutput]`` with ``len(prompts)`` entries.
    """
    from counterpoint.decoding.vllm.backend import VllmBackend

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise OptionError("max_new_tokens", max_new_tokens, "must be >= 1")
    unknown = sorted(set(legacy) - {"amateur", "contrast", "temperature", "top_p", "top_k", "num_beams"})
    if unknown:
        raise TypeError(f"generate_vllm() got unexpected keyword arguments {unknown}")
    given = dict(options or {})
    if legacy:
        given.update(_legacy_options(strategy if isinstance(strategy, str) else strategy.name, legacy))
    spec = get_strategy(strategy)
    options = GenerationOptions(**given)
    request = VllmBackend.request(spec, options)
    if llm is None:
        amateur = request.get("amateur")
        llm = build_llm(model_path, amateur=amateur, dtype=dtype, seed=seed, **dict(llm_kwargs or {}))
    inputs = [
        {"prompt": p} if isinstance(p, str) else {"prompt_token_ids": [int(t) for t in p]} for p in prompts
    ]
    params = sampling_params(request, max_new_tokens, seed)
    if request["mode"] == "beam":
        tokenizer = llm.get_tokenizer()
        outs = []
        for result in llm.beam_search(inputs, params):
            best = result.sequences[0]
            new = tuple(best.tokens[len(best.orig_prompt["prompt_token_ids"]) :])  # drop the prompt
            outs.append(VllmOutput(text=tokenizer.decode(new, skip_special_tokens=True), token_ids=new))
        return outs
    results = llm.generate(inputs, params, use_tqdm=False)
    return [VllmOutput(text=r.outputs[0].text, token_ids=tuple(r.outputs[0].token_ids)) for r in results]
