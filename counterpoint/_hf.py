"""The one adapter over transformers' private generation API.

Everything counterpoint needs from transformers beyond its public, documented surface lives here and
nowhere else: the name of generate's cache argument, the KV cache's layers, ``GenerationMixin._sample``
and ``_beam_search``, the generation config's private tensors, the decoder's layer attributes, and the
one patch counterpoint applies. A test (``tests/test_hf_adapter.py``) fails when another module imports
``transformers.generation.*`` or ``transformers.cache_utils`` or names one of these internals, so an
upstream rename is handled in this file only.

Supported: transformers 5.19 up to the newest 5.x release (the range ``pyproject.toml`` admits; CI tests
its lower bound, the locked version and the newest release). Known moves it absorbs:

* 5.24 renamed generate's and the models' ``past_key_values`` argument (and output field) to ``cache``;
  models take the old name with a FutureWarning until 5.40. :data:`CACHE_ARG` is the name this install
  uses, read once from the models' own signatures; :func:`forward` passes the cache under it and
  :func:`take_cache` / :func:`output_cache` read it under either name.
* 5.24 removed ``DynamicLayer.dtype``; nothing here reads it.
* 5.18 refused ``Cache.crop`` with a positive "length to keep" (deprecated before): :func:`crop_cache`
  always removes a negative count.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import transformers
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicLayer
from transformers.generation import logits_process as _lp
from transformers.generation.utils import GenerateDecoderOnlyOutput

__all__ = [
    "CACHE_ARG",
    "ROW_SHIFT_SAFE_PROCESSORS",
    "cache_from_rows",
    "cache_in",
    "cache_length",
    "cache_rows",
    "crop_cache",
    "decoder_parts",
    "forward",
    "generate_output",
    "intercept_reorder",
    "is_plain_cache",
    "keep_cache_block",
    "keep_candidate",
    "lm_head_logits",
    "mark_strategy",
    "new_cache",
    "output_cache",
    "pad_token",
    "reorder_cache",
    "repeat_cache_rows",
    "run_beam_loop",
    "run_sample_loop",
    "step_mask",
    "supports_logits_to_keep",
    "take_cache",
    "upstream_drops_standard_kwargs",
]

VERSION = transformers.__version__


def _cache_arg() -> str:
    """Generate's and the models' name for the KV cache argument on this install."""
    from transformers import LlamaModel

    params = inspect.signature(LlamaModel.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# "cache" on transformers >= 5.24, "past_key_values" before.
CACHE_ARG = _cache_arg()
_CACHE_NAMES = ("cache", "past_key_values")


@functools.cache
def _forward_cache_arg(cls: type) -> str:
    """The cache argument of one module class's forward (a remote-code model may lag behind)."""
    params = inspect.signature(cls.forward).parameters
    if CACHE_ARG in params:
        return CACHE_ARG
    for name in _CACHE_NAMES:
        if name in params:
            return name
    return CACHE_ARG  # forward(**kwargs): the library's own name


# -- the cache in generate's model_kwargs and in model outputs ------------------------------------------


def take_cache(model_kwargs: dict[str, Any]) -> Any:
    """Pop the KV cache generate() prepared from ``model_kwargs`` (under whichever name it used)."""
    found = None
    for name in _CACHE_NAMES:
        value = model_kwargs.pop(name, None)
        if value is not None:
            found = value
    return found


def cache_in(kwargs: dict[str, Any]) -> Any:
    """The KV cache in generate's ``model_kwargs`` or a forward's keyword arguments (None when absent)."""
    for name in _CACHE_NAMES:
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def output_cache(output: Any) -> Any:
    """The KV cache a model forward returned."""
    value = getattr(output, "cache", None) if CACHE_ARG == "cache" else None
    return value if value is not None else output.past_key_values


def forward(
    module: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> Any:
    """``module(input_ids, attention_mask, position_ids, <cache>, use_cache=True, **kwargs)``.

    Args:
        module: a causal LM or its base model.
        input_ids: ``(B, T)``.
        attention_mask: ``(B, L + T)`` 2-D, or a 4-D additive mask ``(B, 1, T, L + T)``.
        position_ids: ``(B, T)``.
        cache: a cache to extend (None: a new one).
        **kwargs: more forward arguments (``logits_to_keep``, ...).

    Returns:
        The model's output; its cache is :func:`output_cache` of it.
    """
    kwargs[_forward_cache_arg(type(module))] = cache
    return module(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **kwargs,
    )


def step_mask(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The attention mask for a ONE-token forward over a cache, given the 2-D mask ``(R, L + 1)``.

    transformers' mask builder reads a 2-D padding mask on the host at every forward (to tell whether it
    may drop it): a host-device synchronisation per step. A 4-D mask is used as it is, so for the eager
    and SDPA attention implementations this returns the additive ``(R, 1, 1, L + 1)`` mask the builder
    would make (0 where attended, the dtype's minimum where not; a single query row needs no causal part).
    Other implementations (flash attention reads the 2-D mask) get ``mask`` back.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return mask
    dtype = model.dtype
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask == 0, torch.finfo(dtype).min
    )
    return additive[:, None, None, :]


def supports_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` (the lm_head on the last positions only)."""
    check = getattr(model, "_supports_logits_to_keep", None)
    if callable(check):
        return bool(check())
    return "logits_to_keep" in inspect.signature(model.forward).parameters


# -- KV cache operations --------------------------------------------------------------------------------


def new_cache(model: PreTrainedModel) -> Any:
    """An empty dynamic cache laid out for ``model`` (full attention, sliding window, ...)."""
    return DynamicCache(config=model.config)


def is_plain_cache(cache_or_model: Any) -> bool:
    """Whether every layer of the cache (or of a new cache for a model) keeps all keys of full attention.

    Only such caches can be padded, stacked, sliced and re-ordered by rows here (a sliding-window layer
    drops old columns, a recurrent layer has none).
    """
    cache = new_cache(cache_or_model) if isinstance(cache_or_model, torch.nn.Module) else cache_or_model
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def cache_length(cache: Any) -> int:
    """Columns (positions, padding included) the cache holds."""
    return int(cache.get_seq_length())


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` columns, in place.

    ``Cache.crop`` takes the number of columns to remove as a negative count on every supported version
    (a positive "keep this many" was deprecated in 5.x and refused from 5.18 on).
    """
    remove = cache_length(cache) - length
    if remove > 0:
        cache.crop(-remove)


def reorder_cache(cache: Any, rows: torch.Tensor) -> None:
    """Row ``i`` becomes old row ``rows[i]`` (beam search's reordering), in place."""
    cache.reorder_cache(rows)


def intercept_reorder(cache: Any, rows_for: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
    """Route beam search's reordering of ``cache`` through ``rows_for``, until the returned undo is called.

    transformers' beam loop reorders the expert's cache after every step with the rows it chose; with this,
    ``cache`` is reordered by ``rows_for(beam_idx)`` instead (which may also note ``beam_idx``, or extend it
    to rows the loop does not know of). Only this cache object is affected.
    """
    original = cache.reorder_cache

    def reorder(beam_idx: torch.Tensor) -> Any:
        return original(rows_for(beam_idx))

    cache.reorder_cache = reorder

    def undo() -> None:
        if cache.__dict__.get("reorder_cache") is reorder:
            del cache.reorder_cache

    return undo


def keep_cache_block(cache: Any, rows: int, start: int) -> None:
    """Keep rows ``[0, rows)`` and columns ``[start, ...)`` of a plain cache, in place (views, no copy)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.dim() == 4:
            layer.keys = layer.keys[:rows, :, start:]
            layer.values = layer.values[:rows, :, start:]


def repeat_cache_rows(cache: Any, times: int) -> None:
    """Repeat each row ``times`` times, adjacent (``[a, a, b, b]``), in place."""
    cache.batch_repeat_interleave(times)


def cache_rows(cache: Any, row: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``row``'s keys and values per layer, columns ``start:``, each ``(H_kv, L, D)`` (views)."""
    return [(layer.keys[row, :, start:], layer.values[row, :, start:]) for layer in cache.layers]


def cache_from_rows(model: PreTrainedModel, rows: Sequence[list[tuple[torch.Tensor, torch.Tensor]]]) -> Any:
    """A new cache stacking ``rows`` (each from :func:`cache_rows`), left-padded with zeros to the longest.

    Returns:
        ``(cache, pads)``: the cache, and ``(R,)`` the padding columns of each row (mask them out).
    """
    width = max(row[0][0].shape[-2] for row in rows)
    layers = []
    for layer in range(len(rows[0])):
        k0, v0 = rows[0][layer]
        keys = k0.new_zeros(len(rows), k0.shape[0], width, k0.shape[-1])  # (R, H_kv, P, D)
        values = v0.new_zeros(len(rows), v0.shape[0], width, v0.shape[-1])
        for r, row in enumerate(rows):
            k, v = row[layer]
            keys[r, :, width - k.shape[-2] :] = k  # left padding: real tokens end every row
            values[r, :, width - v.shape[-2] :] = v
        layers.append((keys, values))
    pads = torch.tensor([width - row[0][0].shape[-2] for row in rows], device=layers[0][0].device)
    return DynamicCache(ddp_cache_data=layers, config=model.config), pads


def keep_candidate(cache: Any, prefix_len: int, choice: torch.Tensor) -> None:
    """Contrastive search: move each row's chosen candidate column to ``prefix_len``, drop the others.

    The cache holds ``prefix_len`` columns of context and then ``k`` candidate columns per row;
    ``choice`` ``(B,)`` is each row's winner in ``[0, k)``. Afterwards it holds ``prefix_len + 1``.
    """
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name)  # (B, heads, L + k, d)
            index = (prefix_len + choice).view(-1, 1, 1, 1).expand(-1, states.shape[1], 1, states.shape[3])
            states[:, :, prefix_len : prefix_len + 1] = states.gather(2, index)
            setattr(layer, name, states[:, :, : prefix_len + 1])


# -- generation config and output ------------------------------------------------------------------------


def pad_token(generation_config: Any) -> torch.Tensor | None:
    """The pad token tensor generate() prepared on the generation config (None when there is none)."""
    return getattr(generation_config, "_pad_token_tensor", None)


def generate_output(sequences: torch.Tensor, scores: Any, logits: Any, cache: Any) -> Any:
    """generate()'s dict output for a decoder-only model (``return_dict_in_generate=True``)."""
    return GenerateDecoderOnlyOutput(sequences=sequences, scores=scores, logits=logits, **{CACHE_ARG: cache})


# -- transformers' own search loops -----------------------------------------------------------------------


def run_sample_loop(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool,
    streamer: Any,
    model_kwargs: dict[str, Any],
) -> Any:
    """transformers' greedy / sampling loop, exactly as generate() would run it."""
    return GenerationMixin._sample(
        model,
        input_ids,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        generation_config=generation_config,
        synced_gpus=synced_gpus,
        streamer=streamer,
        **model_kwargs,
    )


def run_beam_loop(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool,
    model_kwargs: dict[str, Any],
) -> Any:
    """transformers' beam search loop, exactly as generate() would run it (no streaming there)."""
    return GenerationMixin._beam_search(
        model,
        input_ids,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        generation_config=generation_config,
        synced_gpus=synced_gpus,
        **model_kwargs,
    )


# Processors that may follow a head-only layer contrast: each maps scores shifted by a per-row constant to
# its own output shifted by a per-row constant (or to the same mask), so greedy's argmax and sampling's
# softmax are unchanged. Checked against their transformers source: the warpers scale (temperature) or
# rank / softmax (top-k, top-p, top-h, min-p, typical, epsilon, eta); the others add a per-token bias, set
# -inf, or overwrite a row. Not here on purpose: RepetitionPenalty and ExponentialDecayLengthPenalty
# (multiply by the score's sign) and anything unknown (user processors): those keep the exact path.
ROW_SHIFT_SAFE_PROCESSORS: tuple[type, ...] = tuple(
    getattr(_lp, name)
    for name in (
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TopHLogitsWarper", "MinPLogitsWarper",
        "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper", "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor", "NoRepeatNGramLogitsProcessor", "SequenceBiasLogitsProcessor",
        "NoBadWordsLogitsProcessor", "PrefixConstrainedLogitsProcessor", "ForcedBOSTokenLogitsProcessor",
        "ForcedEOSTokenLogitsProcessor", "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
        "LogitNormalization",
    )
    if hasattr(_lp, name)
)  # fmt: skip


# -- the model's parts ------------------------------------------------------------------------------------


def decoder_parts(model: PreTrainedModel) -> tuple[torch.nn.ModuleList, torch.nn.Module, torch.nn.Module]:
    """``(layers, final_norm, lm_head)`` of a decoder-only causal LM (Llama/Qwen/Mistral/GPT-2 layouts).

    Raises:
        ValueError: the model's layout is not one of the known ones.
    """
    base = getattr(model, "base_model", None)
    layers = next(
        (
            getattr(base, name)
            for name in ("layers", "h", "blocks")
            if isinstance(getattr(base, name, None), torch.nn.ModuleList)
        ),
        None,
    )
    norm = next(
        (
            getattr(base, name)
            for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm")
            if isinstance(getattr(base, name, None), torch.nn.Module)
        ),
        None,
    )
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise ValueError(
            f"cannot find the decoder layers, final norm and lm_head of {type(model).__name__}: supported "
            "layouts are base_model.{layers|h|blocks} with base_model.{norm|ln_f|final_layernorm}"
        )
    return layers, norm, head


def lm_head_logits(
    model: PreTrainedModel, hidden: torch.Tensor, head: torch.nn.Module | None = None
) -> torch.Tensor:
    """The LM head on final hidden states, with the output scaling some architectures add after it.

    Args:
        model: the causal LM (its config says whether logits are scaled or soft-capped).
        hidden: ``(..., H)`` final-norm hidden states.
        head: the lm_head (default ``model.get_output_embeddings()``).

    Returns:
        ``(..., V)`` logits as the model's forward would return them.
    """
    logits = (head if head is not None else model.get_output_embeddings())(hidden)
    config = model.config.get_text_config()
    scale = getattr(config, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)):
        logits = logits * scale
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(scaling, (int, float)):
        logits = logits / scaling
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 and 3
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


# -- GGUF: transformers' config tables ------------------------------------------------------------------

# GGUF architectures whose config transformers' legacy reader special-cases (renames, values read
# from tensors, post-processing): their config comes from transformers itself, not from the fast path.
GGUF_SPECIAL = (
    "t5",
    "stablelm",
    "moe",
    "gpt-oss",
    "gpt_oss",
    "minimax",
    "falcon",
    "bloom",
    "gemma3",
    "gemma4",
    "lfm2",
)


def gguf_config_dict(
    metadata: dict[str, Any], tensor_names: list[str], *, string_list: type
) -> dict[str, Any] | None:
    """The config dict transformers builds from GGUF metadata, or ``None`` where it special-cases.

    Mirrors the generic part of ``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint``
    (same mapping tables, same order); a test compares the result with transformers' own. Used by
    :func:`counterpoint.models.read_model_config` to read a GGUF file's config from its header alone.

    Args:
        metadata: the GGUF header's key/value pairs.
        tensor_names: the file's tensor names.
        string_list: the type the header reader gives string arrays (left to transformers).
    """
    from transformers.integrations import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = metadata.get("general.architecture")
    name = str(metadata.get("general.name", "")).lower()
    if (
        not isinstance(arch, str)
        or arch not in GGUF_CONFIG_MAPPING
        or any(special in arch for special in GGUF_SPECIAL)
        or ("llama" in arch and "mistral" in name)
    ):
        return None
    config: dict[str, Any] = {"tie_word_embeddings": "output.weight" not in tensor_names}
    for key, value in GGUF_CONFIG_DEFAULTS_MAPPING.get(arch, {}).items():
        config.setdefault(key, value)
    for key, value in metadata.items():
        prefix, _, field = key.partition(".")
        renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(field)
        if renamed is None or renamed == -1:
            continue
        if isinstance(value, string_list):
            return None  # a config field held as a string list: leave it to transformers
        config[renamed] = value
    if "vocab_size" not in config and isinstance(metadata.get("tokenizer.ggml.tokens"), string_list):
        config["vocab_size"] = metadata["tokenizer.ggml.tokens"].count
    return config


# -- the one patch: standard generate() arguments for our custom_generate strategies ----------------------
#
# transformers 5.x (seen on 5.19 through 5.24) builds the keyword arguments of a callable
# ``custom_generate`` from the callable's own extra parameters only, and drops what generate() hands any
# built-in strategy: ``streamer``, ``synced_gpus`` and ``tokenizer`` (so ``stop_strings`` fails with "could
# not locate a tokenizer"). For callables marked with :func:`mark_strategy`, and only those, the patched
# extraction keeps the standard entries and adds the callable's own. It is installed the first time one
# of our strategies runs, never at import. :func:`upstream_drops_standard_kwargs` tells whether upstream
# still needs it; a test fails the day it does not, so the patch can be deleted.

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "_counterpoint_strategy"
_ORIGINAL_EXTRACT = GenerationMixin._extract_generation_mode_kwargs


def mark_strategy(fn: F) -> F:
    """Mark ``fn`` as a counterpoint ``custom_generate`` strategy (see the note above)."""
    setattr(fn, _MARK, True)
    return fn


def ensure_strategy_kwargs() -> None:
    """Install the narrow fix for marked strategies' standard kwargs (once; idempotent)."""
    current = GenerationMixin._extract_generation_mode_kwargs
    if getattr(current, _MARK, False):
        return

    def extract(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer):
        if not getattr(custom_generate, _MARK, False):
            return current(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer)
        # The standard entries, as a built-in strategy would get them (this pops `tokenizer` and
        # `assistant_tokenizer` from kwargs), then the strategy's own parameters.
        standard = current(self, None, kwargs, synced_gpus, assistant_model, streamer)
        own = current(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer)
        return {**standard, **own}

    setattr(extract, _MARK, True)
    GenerationMixin._extract_generation_mode_kwargs = extract


def upstream_drops_standard_kwargs() -> bool:
    """Whether unpatched transformers still drops ``streamer``/``tokenizer`` for a callable custom_generate."""

    def probe(model, input_ids, logits_processor, stopping_criteria, generation_config, own=None, **kw):
        return None

    streamer = object()
    got = _ORIGINAL_EXTRACT(None, probe, {"tokenizer": object(), "own": 1}, False, None, streamer)
    return "streamer" not in got or "tokenizer" not in got
